// common/status: the error type every fallible Reservoir function returns.
// Owns Status, Result<T> and the RSV_RETURN_IF_ERROR / RSV_ASSIGN_OR_RETURN macros.
// Depends on nothing but the standard library; our code does not throw.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace rsv {

// Canonical codes (the Abseil set we need). One table at the HTTP edge maps them to statuses.
enum class Code {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kResourceExhausted,
  kPermissionDenied,
  kUnauthenticated,
  kInternal,
  kUnavailable,
};

std::string_view CodeName(Code code);

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message, std::string field = {})
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The input field the error is about ("gpus", "limit_price", "line 12: end"), or empty.
  const std::string& field() const { return field_; }

  // "invalid_argument: gpus: must be positive"
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  std::string field_;
};

inline Status InvalidArgument(std::string field, std::string message) {
  return Status(Code::kInvalidArgument, std::move(message), std::move(field));
}
inline Status NotFound(std::string message) { return Status(Code::kNotFound, std::move(message)); }
inline Status FailedPrecondition(std::string message) {
  return Status(Code::kFailedPrecondition, std::move(message));
}
inline Status AlreadyExists(std::string message) {
  return Status(Code::kAlreadyExists, std::move(message));
}
inline Status Internal(std::string message) { return Status(Code::kInternal, std::move(message)); }

// Result<T>: a value or a non-ok Status (C++20 on this toolchain has no std::expected).
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design, like StatusOr.
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result built from an ok Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace rsv

#define RSV_CONCAT_INNER_(a, b) a##b
#define RSV_CONCAT_(a, b) RSV_CONCAT_INNER_(a, b)

#define RSV_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::rsv::Status rsv_status_ = (expr);        \
    if (!rsv_status_.ok()) return rsv_status_; \
  } while (0)

#define RSV_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define RSV_ASSIGN_OR_RETURN(lhs, expr) \
  RSV_ASSIGN_OR_RETURN_IMPL_(RSV_CONCAT_(rsv_result_, __LINE__), lhs, expr)
