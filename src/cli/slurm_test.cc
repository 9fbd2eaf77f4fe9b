#include "cli/slurm.h"

#include <gtest/gtest.h>

namespace rsv::cli {
namespace {

TEST(Slurm, ReadsSupportedDirectivesAndReportsTheRest) {
  auto j = ParseSlurmScript(
      "#!/bin/bash\n"
      "#SBATCH --job-name=train\n"
      "#SBATCH --gres=gpu:a100:4\n"
      "#SBATCH -t 2:00:00\n"
      "#SBATCH --dependency=afterok:12:13\n"
      "#SBATCH --requeue\n"
      "#SBATCH --partition=big --mem=64G\n"
      "python train.py\n");
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(j->name, "train");
  EXPECT_EQ(j->gpus, 4);
  EXPECT_EQ(j->time, "2:00:00");
  EXPECT_TRUE(j->requeue);
  ASSERT_EQ(j->dependencies.size(), 2u);
  EXPECT_EQ(j->dependencies[1].second, 13);
  EXPECT_EQ(j->time_limit_s, 7200);
  EXPECT_EQ(j->partition, "big");
  EXPECT_EQ(j->memory_mib, 64 * 1024);
  EXPECT_EQ(j->interpreter, "/bin/bash");
  EXPECT_TRUE(j->unsupported.empty());
  auto other = ParseSlurmScript("#SBATCH --exclusive -c 4\n");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->cpu_millis, 4000);
  ASSERT_EQ(other->unsupported.size(), 1u);
  EXPECT_EQ(other->unsupported[0], "line 1: --exclusive");
  EXPECT_EQ(ParseSlurmScript("#!/usr/bin/env python3\n")->interpreter, "/usr/bin/env python3");
  EXPECT_EQ(ParseSlurmScript("echo hi\n")->interpreter, "/bin/sh");
}

TEST(Slurm, TimeAndMemoryFormats) {
  EXPECT_EQ(*ParseSlurmTime("30"), 1800);
  EXPECT_EQ(*ParseSlurmTime("5:30"), 330);
  EXPECT_EQ(*ParseSlurmTime("1:00:00"), 3600);
  EXPECT_EQ(*ParseSlurmTime("2-0"), 2 * 86400);
  EXPECT_EQ(*ParseSlurmTime("1-2:30"), 86400 + 2 * 3600 + 1800);
  EXPECT_EQ(*ParseSlurmTime("UNLIMITED"), 0);
  for (const char* bad : {"", "x", "1:2:3:4", "-1", "1-", "0"}) {
    EXPECT_FALSE(ParseSlurmTime(bad).ok()) << bad;
  }
  EXPECT_EQ(*ParseSlurmMemory("512"), 512);
  EXPECT_EQ(*ParseSlurmMemory("2G"), 2048);
  EXPECT_EQ(*ParseSlurmMemory("2048K"), 2);
  EXPECT_FALSE(ParseSlurmMemory("1K").ok());
  EXPECT_FALSE(ParseSlurmMemory("lots").ok());
  EXPECT_FALSE(ParseSlurmScript("#SBATCH --mem=huge\n").ok());
  EXPECT_FALSE(ParseSlurmScript("#SBATCH --time=soon\n").ok());
  EXPECT_FALSE(ParseSlurmScript("#SBATCH -p a,b\n").ok());
}

TEST(Slurm, GpusFormsAndErrors) {
  EXPECT_EQ(ParseSlurmScript("#SBATCH --gpus=8\n")->gpus, 8);
  EXPECT_EQ(ParseSlurmScript("#SBATCH -G 2\n")->gpus, 2);
  EXPECT_EQ(ParseSlurmScript("#SBATCH --gpus=h100:3\n")->gpus, 3);
  EXPECT_FALSE(ParseSlurmScript("#SBATCH --gpus=lots\n").ok());
  EXPECT_FALSE(ParseSlurmScript("#SBATCH --dependency=singleton\n").ok());
  EXPECT_EQ(ParseSlurmScript("# SBATCH --gpus=8\n")->gpus, 0);  // not a directive
}

}  // namespace
}  // namespace rsv::cli
