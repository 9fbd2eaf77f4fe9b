#include "server/leadership.h"

#include <chrono>

#include "common/http_client.h"

namespace rsv::server {

Leadership::Leadership(ControlPlane* control, LeadershipOptions options, const Clock* clock,
                       std::function<void(const std::string&)> say)
    : control_(control), options_(std::move(options)), clock_(clock), say_(std::move(say)) {}

Leadership::~Leadership() { Stop(); }

Status Leadership::Start() {
  TryToLead();
  if (!duplicate_.empty()) return FailedPrecondition(duplicate_);
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void Leadership::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Every queued write is answered (durable, or refused after a step-down) while the HTTP
  // server that sends the replies still runs. Then the lease is handed over at once: renewed
  // to expire now, which changes nothing when another server took it meanwhile.
  control_->Quiesce();
  if (epoch_ > 0) (void)control_->store()->RenewLease(epoch_, Duration::Micros(0));
}

bool Leadership::TryToLead() {
  Store* store = control_->store();
  // The lease is live under this server's own name, taken by another process: a restart after
  // a crash (take it back at once) or two servers given one --name (leave the live one be).
  // Its address tells them apart: it answers /healthz as the leader only in the second case.
  Result<Lease> held = store->ReadLease();
  if (held.ok() && held->live && held->holder == options_.holder && held->epoch != epoch_ &&
      held->address != options_.address) {
    HttpReply r = HttpCall(held->address, "GET", "/healthz", "", "", -1, 1000);
    if (r.status == 200 && r.body.find("\"role\":\"leader\"") != std::string::npos) {
      duplicate_ = "another server named '" + options_.holder + "' leads at " + held->address +
                   "; give each server its own --name";
      control_->SetLeader(held->address, held->epoch);
      return false;
    }
  }
  Result<int64_t> epoch = store->TakeLease(options_.holder, options_.address, options_.lease);
  if (!epoch.ok()) {
    say_("could not reach the store for the lease: " + epoch.status().ToString());
    return false;
  }
  if (*epoch == 0) {
    Result<Lease> held = store->ReadLease();
    if (held.ok()) control_->SetLeader(held->address, held->epoch);
    return false;
  }
  epoch_ = *epoch;
  renewed_ = clock_->Now();
  Status led = control_->Lead();
  if (!led.ok()) {
    control_->StepDown("could not take over: " + led.ToString());
    return false;
  }
  control_->SetLeader(options_.address, epoch_);
  say_("leading (lease epoch " + std::to_string(epoch_) + ", " +
       std::to_string(control_->applied_seq()) + " commands applied)");
  return true;
}

void Leadership::Run() {
  Store* store = control_->store();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (control_->leading()) {
      cv_.wait_for(lock, std::chrono::microseconds(options_.renew_every.micros()));
      if (stopping_) break;
      lock.unlock();
      Result<bool> renewed = store->RenewLease(epoch_, options_.lease);
      if (renewed.ok() && *renewed) {
        renewed_ = clock_->Now();
      } else if (renewed.ok()) {
        control_->StepDown("the lease was taken over by another server (this server's epoch " +
                           std::to_string(epoch_) + ")");
      } else if (clock_->Now() - renewed_ > options_.lease) {
        // Another server may hold the lease by now: stop before anything here contradicts it.
        control_->StepDown("the lease could not be renewed for " + options_.lease.ToString() +
                           ": " + renewed.status().ToString());
      }
      lock.lock();
      continue;
    }
    if (control_->stepped_down()) break;  // only a restart serves again
    lock.unlock();
    Status s = control_->CatchUp();
    if (!s.ok()) {
      control_->StepDown("could not follow the log: " + s.ToString());
    } else if (!TryToLead()) {
      store->WaitForAppend(options_.poll);
    }
    lock.lock();
  }
}

}  // namespace rsv::server
