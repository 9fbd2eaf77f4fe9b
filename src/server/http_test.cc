// How a connection frames requests: pipelining, the limits, and one reply per request.
#include "server/http.h"

#include <gtest/gtest.h>

#include <string>

namespace rsv::server {
namespace {

TEST(FrameRequests, SplitsPipelinedRequestsAndKeepsBodies) {
  std::string bytes =
      "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 7\r\n\r\n"
      "{\"a\":1}"
      "GET /v1/jobs?state=running HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      "GET /never HTTP/1.1\r\n\r\n";
  auto got = FrameRequests(bytes);
  ASSERT_EQ(got.size(), 3u);  // nothing after Connection: close is read
  EXPECT_EQ(got[0].request.method, "POST");
  EXPECT_EQ(got[0].request.authorization, "Bearer t");
  EXPECT_EQ(got[0].request.body, "{\"a\":1}");
  EXPECT_TRUE(got[0].keep_alive);
  EXPECT_EQ(got[1].request.target, "/v1/jobs?state=running");
  EXPECT_EQ(got[2].request.target, "/healthz");
  EXPECT_FALSE(got[2].keep_alive);
  for (const auto& f : got) EXPECT_FALSE(f.error.has_value());
}

TEST(FrameRequests, MalformedRequestsGetTheirErrorAndEndTheConnection) {
  auto garbage = FrameRequests("NOT HTTP AT ALL\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  ASSERT_EQ(garbage.size(), 1u);
  ASSERT_TRUE(garbage[0].error);
  EXPECT_EQ(garbage[0].error->status, 400);
  EXPECT_FALSE(garbage[0].keep_alive);

  std::string long_target = "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n";
  auto line = FrameRequests(long_target);
  ASSERT_EQ(line.size(), 1u);
  ASSERT_TRUE(line[0].error);
  EXPECT_EQ(line[0].error->status, 414);

  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 150; ++i) many += "X-" + std::to_string(i) + ": y\r\n";
  auto fields = FrameRequests(many + "\r\n");
  ASSERT_EQ(fields.size(), 1u);
  ASSERT_TRUE(fields[0].error);
  EXPECT_EQ(fields[0].error->status, 431);

  std::string huge = "GET / HTTP/1.1\r\nX-Big: " + std::string(70 << 10, 'b') + "\r\n\r\n";
  auto header = FrameRequests(huge);
  ASSERT_EQ(header.size(), 1u);
  ASSERT_TRUE(header[0].error);
  EXPECT_EQ(header[0].error->status, 431);

  auto body = FrameRequests("POST /v1/jobs HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
  ASSERT_EQ(body.size(), 1u);
  ASSERT_TRUE(body[0].error);
  EXPECT_EQ(body[0].error->status, 400);
}

TEST(FrameRequests, ACutOffRequestIsDropped) {
  EXPECT_TRUE(FrameRequests("").empty());
  EXPECT_TRUE(FrameRequests("GET / HTTP/1.1\r\nHost:").empty());
  auto got =
      FrameRequests("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nab");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request.target, "/a");
}

}  // namespace
}  // namespace rsv::server
