// The contract every Store implementation passes (SQLite now; PostgreSQL will be added to the
// factory list). Typed over factories that open a fresh store and reopen an existing one.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>

#include "store/store.h"

namespace rsv {
namespace {

struct SqliteFactory {
  std::string path;
  SqliteFactory() {
    static int n = 0;
    path = (std::filesystem::temp_directory_path() /
            ("rsv_store_" + std::to_string(::getpid()) + "_" + std::to_string(n++) + ".db"))
               .string();
    std::filesystem::remove(path);
  }
  ~SqliteFactory() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  }
  Result<std::unique_ptr<Store>> Open() { return OpenSqliteStore(path); }
};

template <typename Factory>
class StoreContract : public testing::Test {
 protected:
  Factory factory;
};
using Factories = testing::Types<SqliteFactory>;
TYPED_TEST_SUITE(StoreContract, Factories);

Command Cmd(const std::string& kind, const std::string& body, int64_t at = 7) {
  Command c;
  c.kind = kind;
  c.body = body;
  c.at = Timestamp::FromMicros(at);
  return c;
}

std::vector<Command> All(const Store& s) {
  std::vector<Command> out;
  EXPECT_TRUE(s.ForEach([&](const Command& c) {
                 out.push_back(c);
                 return Status::Ok();
               }).ok());
  return out;
}

TYPED_TEST(StoreContract, EmptyStoreHasNothing) {
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*(*s)->LastSeq(), 0);
  EXPECT_TRUE(All(**s).empty());
}

TYPED_TEST(StoreContract, AppendAssignsSeqsInOrderAndRoundTrips) {
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok());
  std::vector<Command> batch = {Cmd("submit", R"({"name":"a \"quoted\" ünï"})", 5),
                                Cmd("cancel", "{}", 9)};
  ASSERT_TRUE((*s)->Append(batch).ok());
  EXPECT_EQ(batch[0].seq, 1);
  EXPECT_EQ(batch[1].seq, 2);
  std::vector<Command> more = {Cmd("cycle", "{}", 11)};
  ASSERT_TRUE((*s)->Append(more).ok());
  EXPECT_EQ(more[0].seq, 3);
  std::vector<Command> all = All(**s);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].body, R"({"name":"a \"quoted\" ünï"})");
  EXPECT_EQ(all[0].at.micros(), 5);
  EXPECT_EQ(all[1].kind, "cancel");
  EXPECT_EQ(all[2].seq, 3);
}

TYPED_TEST(StoreContract, SurvivesReopen) {
  {
    auto s = this->factory.Open();
    ASSERT_TRUE(s.ok());
    std::vector<Command> batch;
    for (int i = 0; i < 1000; ++i) batch.push_back(Cmd("submit", std::to_string(i), i));
    ASSERT_TRUE((*s)->Append(batch).ok());
  }
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*(*s)->LastSeq(), 1000);
  std::vector<Command> next = {Cmd("x", "{}")};
  ASSERT_TRUE((*s)->Append(next).ok());
  EXPECT_EQ(next[0].seq, 1001);
  std::vector<Command> all = All(**s);
  ASSERT_EQ(all.size(), 1001u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(all[i].body, std::to_string(i));
}

TYPED_TEST(StoreContract, ForEachStopsAtTheFirstError) {
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok());
  std::vector<Command> batch = {Cmd("a", "1"), Cmd("b", "2"), Cmd("c", "3")};
  ASSERT_TRUE((*s)->Append(batch).ok());
  int seen = 0;
  Status st = (*s)->ForEach([&](const Command& c) {
    ++seen;
    return c.kind == "b" ? Internal("stop") : Status::Ok();
  });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(seen, 2);
}

TYPED_TEST(StoreContract, GroupCommitterBatchesConcurrentAppendsWithoutLoss) {
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok());
  std::atomic<int> acked{0};
  std::set<int64_t> seqs;
  std::mutex mu;
  {
    GroupCommitter gc(s->get());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 500; ++i) {
          gc.Submit(Cmd("submit", std::to_string(t * 1000 + i)), [&](Status st, int64_t seq) {
            ASSERT_TRUE(st.ok());
            std::lock_guard<std::mutex> lock(mu);
            seqs.insert(seq);
            acked++;
          });
        }
      });
    }
    for (auto& th : threads) th.join();
  }  // the destructor commits what is queued
  EXPECT_EQ(acked.load(), 2000);
  EXPECT_EQ(seqs.size(), 2000u);
  EXPECT_EQ(*seqs.begin(), 1);
  EXPECT_EQ(*seqs.rbegin(), 2000);
  EXPECT_EQ(All(**s).size(), 2000u);
}

}  // namespace
}  // namespace rsv
