// Real child processes: environment, logs, notice delivery, kill. The tests block on waitpid
// (Reap(true)); none sleeps.
#include "agent/executor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace rsv::agent {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct ExecutorTest : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = (std::filesystem::temp_directory_path() /
           ("rsv_exec_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
              .string();
    std::filesystem::remove_all(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  LaunchSpec Spec(uint32_t job, const std::string& cmd, int32_t attempt = 1) {
    LaunchSpec s;
    s.job = job;
    s.attempt = attempt;
    s.command = cmd;
    s.gpus = {2, 3};
    s.env = {"EXTRA=yes"};
    s.state_dir = dir;
    return s;
  }
};

TEST_F(ExecutorTest, GivesTheJobItsGpusIdentityAndLog) {
  Executor ex;
  ASSERT_TRUE(
      ex.Start(Spec(7,
                    "echo gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES "
                    "job=$RESERVOIR_JOB_ID attempt=$RESERVOIR_ATTEMPT extra=$EXTRA; "
                    "echo ckpt=$RESERVOIR_CHECKPOINT_DIR; echo notice=$RESERVOIR_NOTICE_FILE; "
                    "pwd; echo oops >&2; exit 3",
                    2))
          .ok());
  std::vector<ExitStatus> done = ex.Reap(true);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].job, 7u);
  EXPECT_EQ(done[0].attempt, 2);
  EXPECT_FALSE(done[0].signaled);
  EXPECT_EQ(done[0].code, 3);
  std::string log = Slurp(Executor::LogPath(dir, 7, 2));
  EXPECT_NE(log.find("gpus=2,3 nv=2,3 job=7 attempt=2 extra=yes"), std::string::npos) << log;
  EXPECT_NE(log.find("ckpt=" + dir + "/jobs/7/checkpoint"), std::string::npos) << log;
  EXPECT_NE(log.find("notice=" + dir + "/jobs/7/notice.json"), std::string::npos) << log;
  EXPECT_NE(log.find(dir + "/jobs/7/checkpoint\n"), std::string::npos)
      << "runs in its checkpoint dir";
  EXPECT_NE(log.find("oops"), std::string::npos) << "stderr goes to the log too";
  EXPECT_FALSE(ex.Running(7));
}

// A gang member learns its rank, its peers and the rendezvous; the job's own env may move the
// rendezvous port but never its GPUs or its identity.
TEST_F(ExecutorTest, AGangMemberGetsTheRendezvousAndKeepsItsGpus) {
  Executor ex;
  LaunchSpec spec = Spec(8,
                         "echo nodes=$RESERVOIR_NODES rank=$RESERVOIR_NODE_RANK "
                         "n=$RESERVOIR_NUM_NODES per=$RESERVOIR_GPUS_PER_NODE all=$RESERVOIR_GPUS "
                         "master=$MASTER_ADDR:$MASTER_PORT world=$WORLD_SIZE node_rank=$NODE_RANK "
                         "gpus=$CUDA_VISIBLE_DEVICES job=$RESERVOIR_JOB_ID");
  spec.env = {"MASTER_PORT=40000", "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7", "RESERVOIR_JOB_ID=1"};
  spec.gang.rank = 1;
  spec.gang.nodes = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
  spec.gang.gpus_per_node = 2;
  spec.gang.gpus = 6;
  spec.gang.master_port = 29777;
  ASSERT_TRUE(ex.Start(spec).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  std::string log = Slurp(Executor::LogPath(dir, 8, 1));
  EXPECT_NE(log.find("nodes=10.0.0.1,10.0.0.2,10.0.0.3 rank=1 n=3 per=2 all=6 "
                     "master=10.0.0.1:40000 world=6 node_rank=1 gpus=2,3 job=8"),
            std::string::npos)
      << log;
  // One node: the rendezvous is there, but no WORLD_SIZE (its command may be one process).
  LaunchSpec single = Spec(9, "echo n=$RESERVOIR_NUM_NODES world=${WORLD_SIZE-unset}");
  single.gang.nodes = {"10.0.0.1"};
  single.gang.gpus_per_node = single.gang.gpus = 2;
  single.gang.master_port = 29500;
  ASSERT_TRUE(ex.Start(single).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  log = Slurp(Executor::LogPath(dir, 9, 1));
  EXPECT_NE(log.find("n=1 world=unset"), std::string::npos) << log;
}

// Four quarter shares of one GPU where an MPS control daemon runs (its pipe holds `control`):
// each client is limited to 25% of the threads and its memory; the job's own env cannot lift it.
TEST_F(ExecutorTest, SharesOfOneGpuGetMpsLimits) {
  Executor ex;
  const std::string pipe = dir + "/mps";
  std::filesystem::create_directories(pipe);
  std::ofstream(pipe + "/control").put('\n');
  for (uint32_t job = 21; job <= 24; ++job) {
    LaunchSpec spec = Spec(job,
                           "echo gpus=$CUDA_VISIBLE_DEVICES share=$RESERVOIR_GPU_SHARE "
                           "threads=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE "
                           "mem=$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT pipe=$CUDA_MPS_PIPE_DIRECTORY "
                           "mib=$RESERVOIR_GPU_MEMORY_MIB");
    spec.gpus = {3};
    spec.gpu_milli = 250;
    spec.gpu_memory_mib = 20480;
    spec.mps_pipe = pipe;
    spec.env = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=100"};
    std::string limits;
    ASSERT_TRUE(ex.Start(spec, &limits).ok());
    EXPECT_NE(limits.find("GPU share 0.250 through MPS (25% of threads, 20480 MiB)"),
              std::string::npos)
        << limits;
  }
  size_t reaped = 0;
  for (int i = 0; i < 4 && reaped < 4; ++i) reaped += ex.Reap(true).size();
  ASSERT_EQ(reaped, 4u);
  for (uint32_t job = 21; job <= 24; ++job) {
    std::string log = Slurp(Executor::LogPath(dir, job, 1));
    EXPECT_NE(log.find("gpus=3 share=0.250 threads=25 mem=0=20480M pipe=" + pipe + " mib=20480"),
              std::string::npos)
        << log;
  }
}

// Without MPS a share is time-sliced: the job is told its share, nothing claims to enforce it.
TEST_F(ExecutorTest, ASharedGpuWithoutMpsIsTimeSlicedAndSaysSo) {
  Executor ex;
  LaunchSpec spec = Spec(30,
                         "echo share=$RESERVOIR_GPU_SHARE threads=${CUDA_MPS_ACTIVE_THREAD_"
                         "PERCENTAGE-unset} mem=${CUDA_MPS_PINNED_DEVICE_MEM_LIMIT-unset}");
  spec.gpus = {0};
  spec.gpu_milli = 333;
  std::string limits;
  ASSERT_TRUE(ex.Start(spec, &limits).ok());
  EXPECT_NE(limits.find("time-sliced"), std::string::npos) << limits;
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  std::string log = Slurp(Executor::LogPath(dir, 30, 1));
  EXPECT_NE(log.find("share=0.333 threads=unset mem=unset"), std::string::npos) << log;
}

// A MIG instance is named by its UUID, a whole GPU by its index.
TEST_F(ExecutorTest, MigInstancesAreNamedByUuid) {
  Executor ex;
  LaunchSpec spec = Spec(31, "echo gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES");
  spec.gpus = {4, 5};
  spec.devices = {"MIG-fake-h-1-0", "MIG-fake-h-1-1"};
  ASSERT_TRUE(ex.Start(spec).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  std::string log = Slurp(Executor::LogPath(dir, 31, 1));
  EXPECT_NE(log.find("gpus=MIG-fake-h-1-0,MIG-fake-h-1-1 nv=MIG-fake-h-1-0,MIG-fake-h-1-1"),
            std::string::npos)
      << log;
}

TEST_F(ExecutorTest, NoticeWritesTheFileAndTermsTheGroup) {
  Executor ex;
  // The job checkpoints on SIGTERM: it reads the notice file and exits cleanly.
  ASSERT_TRUE(
      ex.Start(
            Spec(1,
                 "trap 'cat \"$RESERVOIR_NOTICE_FILE\" > \"$RESERVOIR_CHECKPOINT_DIR/seen\"; exit "
                 "0' TERM; "
                 "echo ready > \"$RESERVOIR_CHECKPOINT_DIR/ready\"; while :; do sleep 0.05; done"))
          .ok());
  // Deliver the notice once the job has installed its trap (it says so in a file).
  const std::string ready = dir + "/jobs/1/checkpoint/ready";
  while (!std::filesystem::exists(ready)) {
    std::vector<ExitStatus> early = ex.Reap(false);
    ASSERT_TRUE(early.empty()) << "the job exited before it was ready";
  }
  ASSERT_TRUE(ex.Notify(1, 123456, "reclaim", "2.500000").ok());
  std::vector<ExitStatus> done = ex.Reap(true);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].success());
  EXPECT_EQ(Slurp(dir + "/jobs/1/checkpoint/seen"),
            "{\"deadline_us\":123456,\"reason\":\"reclaim\",\"price\":\"2.500000\"}\n");
}

TEST_F(ExecutorTest, KillEndsAJobThatIgnoresTheNotice) {
  Executor ex;
  ASSERT_TRUE(ex.Start(Spec(2,
                            "trap '' TERM; echo ready > \"$RESERVOIR_CHECKPOINT_DIR/ready\"; while "
                            ":; do sleep 0.05; done"))
                  .ok());
  while (!std::filesystem::exists(dir + "/jobs/2/checkpoint/ready"))
    ASSERT_TRUE(ex.Reap(false).empty());
  ASSERT_TRUE(ex.Notify(2, 1, "outbid", "3").ok());
  EXPECT_TRUE(ex.Reap(false).empty());  // still running: it ignores SIGTERM
  ASSERT_TRUE(ex.Kill(2).ok());
  std::vector<ExitStatus> done = ex.Reap(true);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].signaled);
  EXPECT_EQ(done[0].code, SIGKILL);
  EXPECT_EQ(ex.Kill(2).code(), Code::kNotFound);
}

TEST_F(ExecutorTest, CheckpointDirSurvivesAttempts) {
  Executor ex;
  ASSERT_TRUE(ex.Start(Spec(3, "echo 41 > \"$RESERVOIR_CHECKPOINT_DIR/counter\"")).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  ASSERT_TRUE(ex.Start(Spec(3,
                            "n=$(cat \"$RESERVOIR_CHECKPOINT_DIR/counter\"); echo $((n+1)) > "
                            "\"$RESERVOIR_CHECKPOINT_DIR/counter\"",
                            2))
                  .ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  EXPECT_EQ(Slurp(dir + "/jobs/3/checkpoint/counter"), "42\n");
  EXPECT_EQ(ex.Start(Spec(3, "true", 3)).ok(), true);
  EXPECT_EQ(ex.Start(Spec(3, "true", 4)).status().code(), Code::kFailedPrecondition);
  ex.Reap(true);
}

// Blocks (reaping nothing) until `path` exists; fails if the job ended first.
::testing::AssertionResult WaitForFile(Executor& ex, const std::string& path) {
  while (!std::filesystem::exists(path)) {
    if (!ex.Reap(false).empty()) return ::testing::AssertionFailure() << "the job ended first";
  }
  return ::testing::AssertionSuccess();
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

TEST_F(ExecutorTest, TheAgentsEnvironmentNeverReachesTheJob) {
  ::setenv("RESERVOIR_TOKEN", "rsv_secret_in_the_agents_env", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "also-secret", 1);
  Executor ex;
  LaunchSpec s = Spec(4, "env");
  s.pass_env = {"PASSED_ON_PURPOSE"};
  ::setenv("PASSED_ON_PURPOSE", "by-the-operator", 1);
  ASSERT_TRUE(ex.Start(s).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  ::unsetenv("RESERVOIR_TOKEN");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  ::unsetenv("PASSED_ON_PURPOSE");
  std::string log = Slurp(Executor::LogPath(dir, 4, 1));
  EXPECT_EQ(log.find("secret"), std::string::npos) << log;
  EXPECT_NE(log.find("PASSED_ON_PURPOSE=by-the-operator"), std::string::npos) << log;
  EXPECT_NE(log.find("PATH="), std::string::npos) << log;
  EXPECT_NE(log.find("EXTRA=yes"), std::string::npos) << log;
  EXPECT_NE(log.find("HOME=" + dir + "/jobs/4/home"), std::string::npos) << log;
}

// A process that leaves the job's session and group (setsid) still gets the notice and still
// ends with the job.
TEST_F(ExecutorTest, NoticeAndKillReachProcessesThatLeftTheGroup) {
  Executor ex;
  const std::string ckpt = dir + "/jobs/5/checkpoint";
  ASSERT_TRUE(ex.Start(Spec(5,
                            "setsid sh -c 'trap \"echo got > $RESERVOIR_CHECKPOINT_DIR/term\" "
                            "TERM; echo $$ > $RESERVOIR_CHECKPOINT_DIR/escaped; "
                            "while :; do sleep 0.05; done' & "
                            "trap '' TERM; while :; do sleep 0.05; done"))
                  .ok());
  ASSERT_TRUE(WaitForFile(ex, ckpt + "/escaped"));
  const pid_t escaped = std::stoi(Slurp(ckpt + "/escaped"));
  EXPECT_NE(::getsid(escaped), ::getsid(ex.Attempts()[0].pid)) << "it left the session";
  ASSERT_TRUE(ex.Notify(5, 1, "reclaim", "1").ok());
  ASSERT_TRUE(WaitForFile(ex, ckpt + "/term"));  // the notice reached it
  ASSERT_TRUE(ex.Kill(5).ok());
  std::vector<ExitStatus> done = ex.Reap(true);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].signaled);
  EXPECT_FALSE(Alive(escaped)) << "pid " << escaped << " outlived its job";
}

// Jobs of two tenants on one host: each runs as its own user and reaches neither the other's
// checkpoints nor the agent's files. Needs root (to switch users), as the agent does.
TEST_F(ExecutorTest, TenantsJobsRunAsTheirUsersAndReachOnlyTheirOwnFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  Executor ex;
  const std::string root = dir + "/ckpt";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/agent.json") << "{\"secret\": true}\n";
  std::filesystem::permissions(dir + "/agent.json", std::filesystem::perms(0600));
  LaunchSpec a = Spec(10, "id -u; echo mine > $RESERVOIR_CHECKPOINT_DIR/model.pt");
  a.checkpoint_root = root;
  a.uid = a.gid = 2'000'101;
  ASSERT_TRUE(ex.Start(a).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  LaunchSpec b = Spec(11,
                      "id -u; cat $RESERVOIR_CHECKPOINT_DIR/../10/model.pt && echo READ-OTHER; "
                      "echo evil > $RESERVOIR_CHECKPOINT_DIR/../10/model.pt && echo WROTE-OTHER; "
                      "ls $RESERVOIR_CHECKPOINT_DIR/.. && echo LISTED; "
                      "cat " +
                          dir +
                          "/agent.json && echo READ-AGENT; "
                          "ls " +
                          dir +
                          " && echo LISTED-AGENT; "
                          "echo ok > $RESERVOIR_CHECKPOINT_DIR/own && echo WROTE-OWN");
  b.checkpoint_root = root;
  b.uid = b.gid = 2'000'102;
  ASSERT_TRUE(ex.Start(b).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  EXPECT_NE(Slurp(Executor::LogPath(dir, 10, 1)).find("2000101"), std::string::npos);
  std::string log = Slurp(Executor::LogPath(dir, 11, 1));
  EXPECT_NE(log.find("2000102"), std::string::npos) << log;
  for (const char* breach : {"READ-OTHER", "WROTE-OTHER", "LISTED\n", "READ-AGENT", "LISTED-AGENT"})
    EXPECT_EQ(log.find(breach), std::string::npos) << breach << " in:\n" << log;
  EXPECT_NE(log.find("WROTE-OWN"), std::string::npos) << log;
  EXPECT_EQ(Slurp(root + "/10/model.pt"), "mine\n");
}

// A process whose main thread has exited shows as a zombie while its other threads run: the
// kill must still reach it (and the supervisor must not wait for it forever).
TEST_F(ExecutorTest, KillReachesAProcessWhoseMainThreadExited) {
  Executor ex;
  const std::string ckpt = dir + "/jobs/6/checkpoint";
  ASSERT_TRUE(
      ex.Start(Spec(6,
                    "python3 -c 'import ctypes, os, threading, time\n"
                    "threading.Thread(target=lambda: time.sleep(1000)).start()\n"
                    "open(os.environ[\"RESERVOIR_CHECKPOINT_DIR\"] + \"/pid\", \"w\").write("
                    "str(os.getpid()))\n"
                    "ctypes.CDLL(None).pthread_exit(None)' & wait"))
          .ok());
  ASSERT_TRUE(WaitForFile(ex, ckpt + "/pid"));
  std::string pid_text;
  while ((pid_text = Slurp(ckpt + "/pid")).empty()) ASSERT_TRUE(ex.Reap(false).empty());
  const pid_t threads_left = std::stoi(pid_text);
  ASSERT_TRUE(ex.Kill(6).ok());
  ASSERT_EQ(ex.Reap(true).size(), 1u);
  EXPECT_FALSE(Alive(threads_left)) << "pid " << threads_left << " outlived its job";
}

}  // namespace
}  // namespace rsv::agent
