// server/commands: each command's fields, listed once, and the one JSON codec that reads them
// (docs/architecture.md, "The server's write path").
#include "server/commands.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace rsv::server {
namespace cmd {
namespace {

// The field lists. `v(name, field)` visits one field; the writer reads it, the reader sets it.
template <class V>
void Fields(V&, Cycle&) {}
template <class V>
void Fields(V& v, ConfigNode& c) {
  v("name", c.name);
  v("pool", c.pool);
  v("gpus", c.gpus);
  v("topology", c.topology);
  v("gpu_memory_mib", c.gpu_memory_mib);
}
template <class V>
void Fields(V& v, ConfigPool& c) {
  v("name", c.name);
  v("gpu_model", c.gpu_model);
  v("reserve_micros", c.reserve_micros);
  v("min_increment_micros", c.min_increment_micros);
  v("max_notice_us", c.max_notice_us);
  v("base_micros", c.base_micros);
  v("surge_bp", c.surge_bp);
  v("return_rate_bp", c.return_rate_bp);
  v("operator_share_bp", c.operator_share_bp);
  v("holdback_gpus", c.holdback_gpus);
}
template <class V>
void Fields(V& v, Config& c) {
  v("pools", c.pools);
  v("nodes", c.nodes);
}
template <class V>
void Fields(V& v, AddTenant& c) {
  v("name", c.name);
}
template <class V>
void Fields(V& v, DeleteTenant& c) {
  v("name", c.name);
}
template <class V>
void Fields(V& v, AddToken& c) {
  v("admin", c.admin);
  v("node", c.node);
  v("tenant", c.tenant);
  v("hash", c.hash);
}
template <class V>
void Fields(V& v, Revoke& c) {
  v("hash", c.hash);
  v("id", c.id);
}
template <class V>
void Fields(V& v, AddNode& c) {
  v("name", c.name);
  v("pool", c.pool);
  v("gpus", c.gpus);
  v("topology", c.topology);
  v("gpu_memory_mib", c.gpu_memory_mib);
}
template <class V>
void Fields(V& v, Register& c) {
  v("name", c.name);
  v("pool", c.pool);
  v("gpus", c.gpus);
  v("topology", c.topology);
  v("probe", c.probe);
  v("cgroups", c.cgroups);
  v("address", c.address);
  v("inventory", c.inventory);
}
template <class V>
void Fields(V& v, NodeStateChange& c) {
  v("node", c.node);
  v("state", c.state);
  v("reason", c.reason);
}
template <class V>
void Fields(V& v, MemberReport& c) {
  v("node", c.node);
  v("job", c.job);
  v("attempt", c.attempt);
  v("member", c.member);
}
template <class V>
void Fields(V& v, Started& c) {
  Fields(v, static_cast<MemberReport&>(c));
}
template <class V>
void Fields(V& v, StartFailed& c) {
  Fields(v, static_cast<MemberReport&>(c));
  v("reason", c.reason);
  v("counts", c.counts);
}
template <class V>
void Fields(V& v, AgentExit& c) {
  Fields(v, static_cast<MemberReport&>(c));
  v("success", c.success);
  v("lost", c.lost);
  v("detail", c.detail);
}
template <class V>
void Fields(V& v, Checkpoint& c) {
  Fields(v, static_cast<MemberReport&>(c));
  v("marker_us", c.marker_us);
}
template <class V>
void Fields(V& v, ResizeAck& c) {
  Fields(v, static_cast<MemberReport&>(c));
  v("generation", c.generation);
}
template <class V>
void Fields(V& v, Reserve& c) {
  v("tenant", c.tenant);
  v("pool", c.pool);
  v("gpus", c.gpus);
  v("start_us", c.start_us);
  v("duration_us", c.duration_us);
  v("end_us", c.end_us);
  v("lend", c.lend);
  v("quote_only", c.quote_only);
}
template <class V>
void Fields(V& v, Return& c) {
  v("reservation", c.reservation);
  v("caller", c.caller);
}
template <class V>
void Fields(V& v, Dependency& c) {
  v("kind", c.kind);
  v("job", c.job);
}
template <class V>
void Fields(V& v, Submit& c) {
  v("tenant", c.tenant);
  v("pool", c.pool);
  v("name", c.name);
  v("gpus", c.gpus);
  v("tier", c.tier);
  v("limit_micros", c.limit_micros);
  v("fallback_micros", c.fallback_micros);
  v("notice_s", c.notice_s);
  v("time_limit_s", c.time_limit_s);
  v("max_restarts", c.max_restarts);
  v("command", c.command);
  v("workdir", c.workdir);
  v("cpu_millis", c.cpu_millis);
  v("memory_mib", c.memory_mib);
  v("env", c.env);
  v("max_gpus", c.max_gpus);
  v("gpu_step", c.gpu_step);
  v("gpu_milli", c.gpu_milli);
  v("gpu_memory_mib", c.gpu_memory_mib);
  v("resize_mode", c.resize_mode);
  v("resize_cooldown_s", c.resize_cooldown_s);
  v("dependencies", c.dependencies);
}
template <class V>
void Fields(V& v, JobAction& c) {
  v("job", c.job);
  v("caller", c.caller);
}
template <class V>
void Fields(V& v, Cancel& c) {
  Fields(v, static_cast<JobAction&>(c));
}
template <class V>
void Fields(V& v, Release& c) {
  Fields(v, static_cast<JobAction&>(c));
}
template <class V>
void Fields(V& v, Exit& c) {
  Fields(v, static_cast<JobAction&>(c));
  v("success", c.success);
}

using nlohmann::json;

template <class T>
constexpr bool kIsVector = false;
template <class T>
constexpr bool kIsVector<std::vector<T>> = true;
template <class T>
constexpr bool kIsOptional = false;
template <class T>
constexpr bool kIsOptional<std::optional<T>> = true;

// Writes every field (an empty optional is left out).
struct Writer {
  json out = json::object();
  template <class T>
  void operator()(const char* name, T& v) {
    if constexpr (kIsOptional<T>) {
      if (v) (*this)(name, *v);
    } else {
      out[name] = Value(v);
    }
  }
  template <class T>
  static json Value(T& v) {
    if constexpr (std::is_same_v<T, RawJson>) {
      json j = json::parse(v.text, nullptr, false);
      return j.is_discarded() ? json() : j;
    } else if constexpr (kIsVector<T>) {
      json a = json::array();
      for (auto& e : v) a.push_back(Value(e));
      return a;
    } else if constexpr (std::is_class_v<T> && !std::is_same_v<T, std::string>) {
      Writer w;
      Fields(w, v);
      return std::move(w.out);
    } else {
      return json(v);
    }
  }
};

// Sets each field present in the body; the first one of the wrong type fails the read.
struct Reader {
  const json& in;
  std::string path;  // of the object read, for errors ("dependencies[2].")
  Status status = Status::Ok();
  template <class T>
  void operator()(const char* name, T& v) {
    auto it = in.find(name);
    if (!status.ok() || it == in.end()) return;
    Read(*it, path + name, v, &status);
  }
  template <class T>
  static void Read(const json& j, const std::string& at, T& v, Status* st) {
    auto fail = [&](const char* want) { *st = InvalidArgument(at, std::string("is not ") + want); };
    if constexpr (kIsOptional<T>) {
      typename T::value_type x{};
      Read(j, at, x, st);
      v = x;
    } else if constexpr (std::is_same_v<T, RawJson>) {
      v.text = j.dump();
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!j.is_boolean()) return fail("true or false");
      v = j.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!j.is_number_integer()) return fail("an integer");
      if (j.is_number_unsigned() ? j.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max())
                                 : j.get<int64_t>() < std::numeric_limits<T>::min() ||
                                       j.get<int64_t>() > std::numeric_limits<T>::max()) {
        return fail("an integer in range");
      }
      v = static_cast<T>(j.get<int64_t>());
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!j.is_string()) return fail("a string");
      v = j.get<std::string>();
    } else if constexpr (kIsVector<T>) {
      if (!j.is_array()) return fail("an array");
      v.clear();
      for (size_t i = 0; i < j.size() && st->ok(); ++i) {
        v.emplace_back();
        Read(j[i], at + "[" + std::to_string(i) + "]", v.back(), st);
      }
    } else {
      if (!j.is_object()) return fail("an object");
      Reader r{j, at + "."};
      Fields(r, v);
      *st = r.status;
    }
  }
};

template <class T>
std::string EncodeOne(const T& x) {
  Writer w;
  Fields(w, const_cast<T&>(x));  // the writer only reads
  // Client strings may hold bytes that are not UTF-8: replaced, as in any reply.
  return w.out.dump(-1, ' ', false, json::error_handler_t::replace);
}

template <size_t I = 0>
Result<Cmd> DecodeAs(const std::string& kind, const json& body) {
  if constexpr (I == std::variant_size_v<Cmd>) {
    return InvalidArgument("kind", "unknown command kind '" + kind + "'");
  } else {
    using T = std::variant_alternative_t<I, Cmd>;
    if (kind != T::kKind) return DecodeAs<I + 1>(kind, body);
    T c;
    Reader r{body, ""};
    Fields(r, c);
    if (!r.status.ok()) return r.status;
    return Cmd(std::move(c));
  }
}

}  // namespace
}  // namespace cmd

const char* KindOf(const Cmd& c) {
  return std::visit([](const auto& x) { return std::decay_t<decltype(x)>::kKind; }, c);
}

std::string EncodeCommand(const Cmd& c) {
  return std::visit([](const auto& x) { return cmd::EncodeOne(x); }, c);
}

Result<Cmd> DecodeCommand(const std::string& kind, const std::string& body) {
  nlohmann::json b = nlohmann::json::parse(body, nullptr, false);
  if (b.is_discarded() || !b.is_object()) return InvalidArgument("body", "is not a JSON object");
  return cmd::DecodeAs(kind, b);
}

}  // namespace rsv::server
