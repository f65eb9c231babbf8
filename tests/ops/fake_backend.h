// FakeBackend + LoopThread: an AdminServer wired to canned data on a real libuv loop thread, for
// the admin API and tetherctl tests. Every backend call asserts it runs on the loop thread.
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gateway/admin/admin_server.h"

namespace tether::testing {

// Runs a uv loop on its own thread; the LoopCaller is created and shut down on that thread.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();
  LoopCaller* Caller() { return caller_.get(); }
  std::thread::id id() const { return thread_.get_id(); }
  // Blocks the loop thread for `ms` (simulates a stuck loop).
  void Block(int ms);

 private:
  uv_loop_t loop_;
  std::unique_ptr<LoopCaller> caller_;
  std::thread thread_;
};

class FakeBackend : public AdminBackend {
 public:
  explicit FakeBackend(LoopThread* loop) : loop_(loop) {}
  std::string MetricsText() override;
  bool Ready() override;
  nlohmann::json Status() override;
  nlohmann::json Sessions(const std::optional<std::string>& app) override;
  AdminResult Kick(const std::string& device) override;
  nlohmann::json Queue() override;
  nlohmann::json DeadLetters() override;
  void RetryDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) override;
  void DropDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) override;
  void Reload(std::function<void(AdminResult)> done) override;
  nlohmann::json StoreCheck() override;

  std::atomic<bool> ready{true};
  std::atomic<bool> reload_fails{false};
  std::atomic<bool> store_ok{true};
  std::atomic<int> off_loop_calls{0};  // backend calls that were NOT on the loop thread
  std::string last_kicked;             // loop thread only
  // While set, dead-letter changes are not "committed" until CommitHeld() runs on the loop.
  std::atomic<bool> hold_commits{false};
  void CommitHeld();                   // loop thread

 private:
  void CheckThread();
  void Finish(AdminResult r, std::function<void(AdminResult)> done);
  LoopThread* loop_;
  std::vector<std::pair<AdminResult, std::function<void(AdminResult)>>> held_;  // loop thread only
};

// A standalone AdminServer on 127.0.0.1:<ephemeral> with a FakeBackend.
struct FakeAdmin {
  FakeAdmin();
  ~FakeAdmin();
  std::string address() const { return "127.0.0.1:" + std::to_string(server->port()); }
  const std::string token = "test-admin-token-0123456789";
  LoopThread loop;
  FakeBackend backend{&loop};
  std::unique_ptr<AdminServer> server;
};

}  // namespace tether::testing
