// common/archive: a compact binary encoding of in-memory state, for snapshots (docs/ha.md,
// "Snapshots"). One function per type lists its fields for both directions: `Io(ar, x)` writes
// `x` through an ArchiveWriter and reads into `x` through an ArchiveReader, so writing and
// reading can never list different fields. Integers are fixed-width in this machine's byte
// order; a snapshot is read back by the same build of the same format (its header says which).
// A reader never reads past its input, and a count is checked against the bytes left before
// anything is allocated for it, so damaged input fails cleanly (`failed()`).
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/ids.h"
#include "common/units.h"

namespace rsv {

class ArchiveWriter {
 public:
  static constexpr bool kReading = false;
  // Collects everything in out().
  ArchiveWriter() = default;
  // Hands what is written to `sink` in pieces of about `piece` bytes (Flush: the rest). Once the
  // sink fails, nothing more is handed to it and Flush returns false.
  explicit ArchiveWriter(std::function<bool(std::string_view)> sink, size_t piece = size_t{1} << 20)
      : sink_(std::move(sink)), piece_(piece) {}
  void Raw(const void* p, size_t n) {
    if (n == 0) return;
    out_.append(static_cast<const char*>(p), n);
    if (sink_ && out_.size() >= piece_) Flush();
  }
  bool Flush() {
    if (sink_ && !sink_failed_ && !out_.empty()) sink_failed_ = !sink_(out_);
    if (sink_) out_.clear();
    return !sink_failed_;
  }
  // A count of elements to follow (always possible when writing).
  bool Count(uint64_t& n, size_t) {
    Raw(&n, sizeof n);
    return true;
  }
  void Fail() {}
  std::string& out() { return out_; }

 private:
  std::string out_;
  std::function<bool(std::string_view)> sink_;
  size_t piece_ = 0;
  bool sink_failed_ = false;
};

class ArchiveReader {
 public:
  static constexpr bool kReading = true;
  explicit ArchiveReader(std::string_view in) : in_(in) {}
  void Raw(void* p, size_t n) {
    if (n == 0) return;
    if (failed_ || in_.size() - pos_ < n) {
      failed_ = true;
      std::memset(p, 0, n);
      return;
    }
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
  }
  // Reads a count of elements, each at least `min_bytes` long: false (and failed) when the
  // input is too short to hold them.
  bool Count(uint64_t& n, size_t min_bytes) {
    Raw(&n, sizeof n);
    if (failed_ || (min_bytes > 0 && n > (in_.size() - pos_) / min_bytes)) {
      failed_ = true;
      n = 0;
      return false;
    }
    return true;
  }
  void Fail() { failed_ = true; }
  bool failed() const { return failed_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

// Writes `x` (the writer never changes what it is given).
template <class T>
void Save(ArchiveWriter& w, const T& x) {
  Io(w, const_cast<T&>(x));
}

// Declared before any is defined, so that each finds the others for nested containers.
template <class Ar, class T, class A>
void Io(Ar& ar, std::vector<T, A>& v);
template <class Ar, class T, class A>
void Io(Ar& ar, std::deque<T, A>& v);
template <class Ar, class A, class B>
void Io(Ar& ar, std::pair<A, B>& p);
template <class Ar, class... T>
void Io(Ar& ar, std::tuple<T...>& t);
template <class Ar, class T>
void Io(Ar& ar, std::optional<T>& o);
template <class Ar, class K, class C, class A>
void Io(Ar& ar, std::set<K, C, A>& s);
template <class Ar, class K, class C, class A>
void Io(Ar& ar, std::multiset<K, C, A>& s);
template <class Ar, class K, class V, class C, class A>
void Io(Ar& ar, std::map<K, V, C, A>& m);

template <class Ar, class T>
requires(std::is_arithmetic_v<T> || std::is_enum_v<T>) &&
    (!std::is_same_v<T, bool>)void Io(Ar& ar, T& v) {
  ar.Raw(&v, sizeof v);
}
template <class Ar>
void Io(Ar& ar, bool& v) {
  uint8_t b = v ? 1 : 0;
  ar.Raw(&b, 1);
  if (b > 1) ar.Fail();
  v = b == 1;
}
template <class Ar>
void Io(Ar& ar, __int128& v) {
  ar.Raw(&v, sizeof v);
}
template <class Ar>
void Io(Ar& ar, Timestamp& t) {
  int64_t us = t.micros();
  Io(ar, us);
  t = Timestamp::FromMicros(us);
}
template <class Ar>
void Io(Ar& ar, Duration& d) {
  int64_t us = d.micros();
  Io(ar, us);
  d = Duration::Micros(us);
}
template <class Ar>
void Io(Ar& ar, Money& m) {
  int64_t us = m.micros();
  Io(ar, us);
  m = Money::Micros(us);
}
template <class Ar, class Tag>
void Io(Ar& ar, Id<Tag>& id) {
  uint32_t v = id.value();
  Io(ar, v);
  id = Id<Tag>(v);
}
template <class Ar>
void Io(Ar& ar, std::string& s) {
  uint64_t n = s.size();
  if (!ar.Count(n, 1)) return;
  if constexpr (Ar::kReading) s.resize(n);
  ar.Raw(s.data(), n);
}

// Sequences and sets with an explicit function per element (for element types whose Io is not
// found by name, such as a class's private types).
template <class Ar, class Seq, class F>
void IoSeq(Ar& ar, Seq& v, F&& each) {
  uint64_t n = v.size();
  if (!ar.Count(n, 1)) return;
  if constexpr (Ar::kReading) {
    // One element at a time: memory grows with the input read, never with a count alone.
    v.clear();
    for (uint64_t i = 0; i < n && !ar.failed(); ++i) each(v.emplace_back());
  } else {
    for (auto& x : v) each(x);
  }
}
template <class Ar, class Set, class F>
void IoSet(Ar& ar, Set& s, F&& each) {
  uint64_t n = s.size();
  if (!ar.Count(n, 1)) return;
  if constexpr (Ar::kReading) {
    s.clear();
    for (uint64_t i = 0; i < n && !ar.failed(); ++i) {
      typename Set::value_type x{};
      each(x);
      s.insert(s.end(), std::move(x));
    }
  } else {
    for (const auto& x : s) each(const_cast<typename Set::value_type&>(x));
  }
}

template <class Ar, class Map, class F>
void IoMap(Ar& ar, Map& m, F&& each_value) {
  uint64_t n = m.size();
  if (!ar.Count(n, 1)) return;
  if constexpr (Ar::kReading) {
    m.clear();
    for (uint64_t i = 0; i < n && !ar.failed(); ++i) {
      typename Map::key_type k{};
      Io(ar, k);
      each_value(m.emplace_hint(m.end(), std::move(k), typename Map::mapped_type{})->second);
    }
  } else {
    for (auto& [k, v] : m) {
      Io(ar, const_cast<typename Map::key_type&>(k));
      each_value(v);
    }
  }
}

template <class Ar, class T, class A>
void Io(Ar& ar, std::vector<T, A>& v) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    uint64_t n = v.size();
    if (!ar.Count(n, sizeof(T))) return;
    if constexpr (Ar::kReading) v.resize(n);
    ar.Raw(v.data(), n * sizeof(T));
  } else {
    IoSeq(ar, v, [&](T& x) { Io(ar, x); });
  }
}
template <class Ar, class T, class A>
void Io(Ar& ar, std::deque<T, A>& v) {
  IoSeq(ar, v, [&](T& x) { Io(ar, x); });
}
template <class Ar, class A, class B>
void Io(Ar& ar, std::pair<A, B>& p) {
  Io(ar, p.first);
  Io(ar, p.second);
}
template <class Ar, class... T>
void Io(Ar& ar, std::tuple<T...>& t) {
  std::apply([&](T&... x) { (Io(ar, x), ...); }, t);
}
template <class Ar, class T>
void Io(Ar& ar, std::optional<T>& o) {
  bool has = o.has_value();
  Io(ar, has);
  if constexpr (Ar::kReading) {
    if (has) o.emplace();
  }
  if (has) Io(ar, *o);
}
template <class Ar, class K, class C, class A>
void Io(Ar& ar, std::set<K, C, A>& s) {
  IoSet(ar, s, [&](K& x) { Io(ar, x); });
}
template <class Ar, class K, class C, class A>
void Io(Ar& ar, std::multiset<K, C, A>& s) {
  IoSet(ar, s, [&](K& x) { Io(ar, x); });
}
template <class Ar, class K, class V, class C, class A>
void Io(Ar& ar, std::map<K, V, C, A>& m) {
  IoMap(ar, m, [&](V& v) { Io(ar, v); });
}

}  // namespace rsv
