// The contract every Store implementation passes: SQLite and PostgreSQL (a real server, started
// once for this test binary). Typed over factories that open a fresh store and reopen it.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "store/pg_test_instance.h"
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

// One PostgreSQL server for the whole binary; each factory gets a database of its own.
struct PostgresFactory {
  std::string url;
  PostgresFactory() {
    static int n = 0;
    const std::string db = "contract_" + std::to_string(n++);
    testing::PostgresInstance* pg = testing::SharedPostgres();
    if (pg && pg->CreateDatabase(db)) url = pg->Url(db);
  }
  Result<std::unique_ptr<Store>> Open() {
    if (url.empty()) return Status(Code::kUnavailable, "no PostgreSQL server for the test");
    return OpenPostgresStore(url);
  }
};

template <typename Factory>
class StoreContract : public ::testing::Test {
 protected:
  Factory factory;
};
using Factories = ::testing::Types<SqliteFactory, PostgresFactory>;
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

TYPED_TEST(StoreContract, ForEachAfterReadsTheTail) {
  auto s = this->factory.Open();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::vector<Command> batch;
  for (int i = 0; i < 25000; ++i) batch.push_back(Cmd("submit", std::to_string(i)));
  ASSERT_TRUE((*s)->Append(batch).ok());  // more than one insert and one read page
  int64_t expect = 20001;
  ASSERT_TRUE((*s)->ForEachAfter(20000,
                                 [&](const Command& c) {
                                   EXPECT_EQ(c.seq, expect);
                                   EXPECT_EQ(c.body, std::to_string(expect - 1));
                                   ++expect;
                                   return Status::Ok();
                                 })
                  .ok());
  EXPECT_EQ(expect, 25001);
  EXPECT_EQ(*(*s)->LastSeq(), 25000);
}

// Two processes' views of one database: a second store on it follows the first one's appends,
// and appends after the last seq either wrote.
TYPED_TEST(StoreContract, TwoStoresOnOneDatabaseShareTheLog) {
  auto a = this->factory.Open();
  auto b = this->factory.Open();
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<Command> one = {Cmd("a", "1"), Cmd("a", "2")};
  ASSERT_TRUE((*a)->Append(one).ok());
  std::vector<Command> two = {Cmd("b", "3")};
  ASSERT_TRUE((*b)->Append(two).ok());
  EXPECT_EQ(two[0].seq, 3);
  std::vector<Command> three = {Cmd("a", "4")};
  ASSERT_TRUE((*a)->Append(three).ok());
  EXPECT_EQ(three[0].seq, 4);
  EXPECT_EQ(All(**b).size(), 4u);
}

TYPED_TEST(StoreContract, TheLeaseFencesADeposedHolder) {
  auto a = this->factory.Open();
  auto b = this->factory.Open();
  ASSERT_TRUE(a.ok() && b.ok());
  Result<Lease> none = (*a)->ReadLease();
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->epoch, 0);
  EXPECT_FALSE(none->live);

  // A takes it; B cannot while it is live; A renews it.
  Result<int64_t> ea = (*a)->TakeLease("a", "http://a", Duration::Seconds(60));
  ASSERT_TRUE(ea.ok()) << ea.status().ToString();
  EXPECT_EQ(*ea, 1);
  EXPECT_EQ(*(*b)->TakeLease("b", "http://b", Duration::Seconds(60)), 0);
  Result<Lease> held = (*b)->ReadLease();
  EXPECT_TRUE(held->live);
  EXPECT_EQ(held->holder, "a");
  EXPECT_EQ(held->address, "http://a");
  EXPECT_TRUE(*(*a)->RenewLease(1, Duration::Seconds(60)));
  std::vector<Command> first = {Cmd("x", "1")};
  ASSERT_TRUE((*a)->Append(first).ok());

  // A lets it lapse (renewed to expire at once): B takes it with a new epoch.
  EXPECT_TRUE(*(*a)->RenewLease(1, Duration::Micros(0)));
  Result<int64_t> eb = (*b)->TakeLease("b", "http://b", Duration::Seconds(60));
  ASSERT_TRUE(eb.ok());
  EXPECT_EQ(*eb, 2);

  // A, deposed, can neither renew nor append: nothing of its batch lands.
  EXPECT_FALSE(*(*a)->RenewLease(1, Duration::Seconds(60)));
  std::vector<Command> late = {Cmd("x", "late"), Cmd("x", "later")};
  Status st = (*a)->Append(late);
  EXPECT_TRUE(Deposed(st)) << st.ToString();
  EXPECT_EQ(late[0].seq, 0);
  std::vector<Command> mine = {Cmd("y", "2")};
  ASSERT_TRUE((*b)->Append(mine).ok());
  EXPECT_EQ(mine[0].seq, 2);
  std::vector<Command> all = All(**a);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].body, "2");
  // The holder of a live lease may take it again (a restart with the same id): a new epoch.
  EXPECT_EQ(*(*b)->TakeLease("b", "http://b2", Duration::Seconds(60)), 3);
  EXPECT_EQ((*a)->ReadLease()->address, "http://b2");
}

// Snapshots: parts are invisible until committed; the newest committed one is read back whole
// (binary bytes included); committing a second compacts the log through the first, drops older
// snapshots and parts never committed; a deposed holder cannot commit one.
TYPED_TEST(StoreContract, SnapshotsAreReadBackWholeAndCompactTheLog) {
  auto a = this->factory.Open();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  Store& s = **a;
  std::string data;
  Result<int64_t> none = s.LatestSnapshot(&data);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, 0);
  std::vector<Command> log;
  for (int i = 1; i <= 10; ++i) log.push_back(Cmd("x", std::to_string(i)));
  ASSERT_TRUE(s.Append(log).ok());

  std::string first(3000, '\0');
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<char>(i * 7);  // every byte
  ASSERT_TRUE(s.SaveSnapshotPart(4, 0, std::string_view(first).substr(0, 1000)).ok());
  ASSERT_TRUE(s.SaveSnapshotPart(4, 1, std::string_view(first).substr(1000)).ok());
  EXPECT_EQ(*s.LatestSnapshot(&data), 0);      // not committed yet
  EXPECT_FALSE(s.CommitSnapshot(4, 3).ok());   // a part is missing
  EXPECT_FALSE(s.CommitSnapshot(11, 2).ok());  // past the log's end
  Result<int64_t> compacted = s.CommitSnapshot(4, 2);
  ASSERT_TRUE(compacted.ok()) << compacted.status().ToString();
  EXPECT_EQ(*compacted, 0);
  ASSERT_EQ(*s.LatestSnapshot(&data), 4);
  EXPECT_TRUE(data == first);
  EXPECT_EQ(All(s).size(), 10u);                         // the first snapshot compacts nothing
  Status again = s.SaveSnapshotPart(4, 0, "overwrite");  // a committed snapshot stays as it is
  EXPECT_EQ(again.code(), Code::kAlreadyExists) << again.ToString();
  ASSERT_EQ(*s.LatestSnapshot(&data), 4);
  EXPECT_TRUE(data == first);

  ASSERT_TRUE(s.SaveSnapshotPart(6, 0, "abandoned").ok());  // never committed
  ASSERT_TRUE(s.SaveSnapshotPart(8, 0, "second").ok());
  compacted = s.CommitSnapshot(8, 1);
  ASSERT_TRUE(compacted.ok()) << compacted.status().ToString();
  EXPECT_EQ(*compacted, 4);
  ASSERT_EQ(*s.LatestSnapshot(&data), 8);
  EXPECT_EQ(data, "second");
  std::vector<Command> rest = All(s);
  ASSERT_EQ(rest.size(), 6u);
  EXPECT_EQ(rest.front().seq, 5);
  std::vector<Command> more = {Cmd("x", "11")};
  ASSERT_TRUE(s.Append(more).ok());
  EXPECT_EQ(more[0].seq, 11);  // seqs go on after a compaction

  // The lease fences snapshots like appends.
  auto b = this->factory.Open();
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(*s.TakeLease("a", "http://a", Duration::Seconds(60)), 1);
  ASSERT_TRUE(*s.RenewLease(1, Duration::Micros(0)));
  ASSERT_EQ(*(*b)->TakeLease("b", "http://b", Duration::Seconds(60)), 2);
  ASSERT_TRUE(s.SaveSnapshotPart(10, 0, "late").ok());
  ASSERT_TRUE((*b)->SaveSnapshotPart(10, 0, "new leader's").ok());  // its own epoch's part
  Result<int64_t> late = s.CommitSnapshot(10, 1);
  EXPECT_TRUE(Deposed(late.status())) << late.status().ToString();
  EXPECT_EQ(*(*b)->LatestSnapshot(&data), 8);
  ASSERT_TRUE((*b)->CommitSnapshot(10, 1).ok());
  ASSERT_EQ(*(*b)->LatestSnapshot(&data), 10);
  EXPECT_EQ(data, "new leader's");  // the deposed leader's part never mixed in
}

}  // namespace
}  // namespace rsv
