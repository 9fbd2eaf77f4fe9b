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
  ASSERT_EQ(j->unsupported.size(), 2u);
  EXPECT_EQ(j->unsupported[0], "line 7: --partition=big");
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
