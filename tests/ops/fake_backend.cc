#include "tests/ops/fake_backend.h"

#include <future>

#include "gateway/admin/metrics.h"

namespace tether::testing {

LoopThread::LoopThread() {
  uv_loop_init(&loop_);
  std::promise<void> started;
  thread_ = std::thread([this, &started] {
    caller_ = std::make_unique<LoopCaller>(&loop_);
    started.set_value();
    uv_run(&loop_, UV_RUN_DEFAULT);  // ends once the caller's async handle is closed
  });
  started.get_future().wait();
}

LoopThread::~LoopThread() {
  // Shut the caller down from inside the loop; then the loop has no handles and returns.
  caller_->Post([this] { caller_->Shutdown(); });
  thread_.join();
  caller_.reset();  // after Shutdown(): only releases memory
  uv_run(&loop_, UV_RUN_NOWAIT);
  uv_loop_close(&loop_);
}

void LoopThread::Block(int ms) {
  caller_->Post([ms] { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
}

void FakeBackend::CheckThread() {
  if (std::this_thread::get_id() != loop_->id()) ++off_loop_calls;
}

std::string FakeBackend::MetricsText() {
  CheckThread();
  MetricsRegistry r;
  TetherMetrics m(r);
  m.sessions.With({"myapp", "active"}).Set(2);
  m.upstream_up().Set(1);
  return r.Render();
}

bool FakeBackend::Ready() {
  CheckThread();
  return ready;
}

nlohmann::json FakeBackend::Status() {
  CheckThread();
  return {{"version", "0.1.0"},
          {"gateway_id", "gw-test"},
          {"uptime_s", 3600},
          {"mode", "upstream"},
          {"upstream", {{"url", "http://127.0.0.1:9"}, {"up", true}, {"rtt_ms", 48}}},
          {"sessions", 2},
          {"queue", {{"entries", 42}, {"bytes", 4096}, {"oldest_age_s", 61}}},
          {"dead_letters", 1}};
}

nlohmann::json FakeBackend::Sessions(const std::optional<std::string>& app) {
  CheckThread();
  nlohmann::json all = nlohmann::json::array(
      {{{"device", "sensor-1"}, {"app", "myapp"}, {"state", "active"}, {"address", "10.0.0.7:5683"},
        {"last_seen_s", 3}},
       {{"device", "sensor-2"}, {"app", "other"}, {"state", "active"}, {"address", "10.0.0.8:5683"},
        {"last_seen_s", 12}}});
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : all) {
    if (!app || s["app"] == *app) out.push_back(s);
  }
  return {{"sessions", out}};
}

AdminResult FakeBackend::Kick(const std::string& device) {
  CheckThread();
  if (device != "sensor-1" && device != "dev/with space") {
    return Diagnostic(ErrorCode::kNotFound, "no session for device '" + device + "'");
  }
  last_kicked = device;
  return AdminReport{"session of '" + device + "' ended; its onDisconnect ops ran", {{"device", device}}};
}

nlohmann::json FakeBackend::Queue() {
  CheckThread();
  return {{"routes", nlohmann::json::array({{{"route", "devices"}, {"entries", 42}, {"bytes", 4096},
                                             {"oldest_age_s", 61}, {"dead_letters", 1}},
                                            {{"route", "telemetry"}, {"entries", 0}, {"bytes", 0},
                                             {"oldest_age_s", 0}, {"dead_letters", 0}}})}};
}

nlohmann::json FakeBackend::DeadLetters() {
  CheckThread();
  return {{"dead_letters", nlohmann::json::array({{{"id", "17"}, {"route", "devices"},
                                                   {"path", "fleet/site1/sensor-1/config"},
                                                   {"error", "401 Permission denied"}, {"age_s", 300}}})}};
}

void FakeBackend::Finish(AdminResult r, std::function<void(AdminResult)> done) {
  if (hold_commits) {
    held_.emplace_back(std::move(r), std::move(done));
    return;
  }
  done(std::move(r));
}

void FakeBackend::CommitHeld() {
  CheckThread();
  // A done() may end the test and destroy this backend: nothing of it is touched after the last.
  auto held = std::move(held_);
  held_.clear();
  for (auto& [r, done] : held) done(std::move(r));
}

void FakeBackend::RetryDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) {
  CheckThread();
  if (id && *id != "17") return done(Diagnostic(ErrorCode::kNotFound, "no dead letter " + *id));
  Finish(AdminReport{id ? "dead letter 17 requeued" : "1 dead letter(s) requeued", {{"count", 1}}}, std::move(done));
}

void FakeBackend::DropDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) {
  CheckThread();
  if (id && *id != "17") return done(Diagnostic(ErrorCode::kNotFound, "no dead letter " + *id));
  Finish(AdminReport{id ? "dead letter 17 dropped" : "1 dead letter(s) dropped", {{"count", 1}}}, std::move(done));
}

void FakeBackend::Reload(std::function<void(AdminResult)> done) {
  CheckThread();
  if (reload_fails) {
    return done(
        Diagnostic::Invalid("/etc/tether/tether.yaml:3:1: unknown key 'bogus'; keeping the running configuration"));
  }
  done(AdminReport{"configuration /etc/tether/tether.yaml applied"});
}

nlohmann::json FakeBackend::StoreCheck() {  // runs on an HTTP thread by contract
  return {{"ok", store_ok.load()}, {"path", "/var/lib/tether"}, {"entries_checked", 1234},
          {"problems", store_ok ? nlohmann::json::array() : nlohmann::json::array({"queue index gap at seq 77"})}};
}

FakeAdmin::FakeAdmin() {
  AdminServer::Options o;
  o.listen = {"127.0.0.1", 0};
  o.token = token;
  o.token_file = "/run/tether/admin.token";
  o.call_timeout = std::chrono::milliseconds(2000);
  o.health_timeout = std::chrono::milliseconds(500);
  server = std::make_unique<AdminServer>(o, &backend, loop.Caller());
  server->Start();
}

FakeAdmin::~FakeAdmin() {
  server->Stop();
  // Let work already posted to the loop (it may use the backend) finish before the backend goes.
  loop.Caller()->Call([] { return true; }, std::chrono::seconds(5));
}

}  // namespace tether::testing
