// util::CallbackScope, util::Hook, util::Subscription: callbacks after their owner is closed or
// gone do nothing; a registration lasts exactly as long as its handle.
#include "util/callback_scope.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tether::util {
namespace {

TEST(CallbackScope, GuardedCallbackRunsWithItsArgumentsWhileOpen) {
  CallbackScope scope;
  std::vector<std::string> seen;
  std::function<void(const std::string&, int)> cb =
      scope.Guard([&](const std::string& s, int n) { seen.push_back(s + std::to_string(n)); });
  cb("a", 1);
  cb("b", 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"a1", "b2"}));
  EXPECT_FALSE(scope.closed());
}

TEST(CallbackScope, CallbackAfterCloseDoesNotRun) {
  CallbackScope scope;
  int runs = 0;
  auto before = scope.Guard([&] { ++runs; });
  scope.Close();
  EXPECT_TRUE(scope.closed());
  auto after = scope.Guard([&] { ++runs; });  // guarded after Close: never runs either
  before();
  after();
  scope.Close();  // idempotent
  EXPECT_EQ(runs, 0);
}

TEST(CallbackScope, CallbackAfterDestructionDoesNotRun) {
  int runs = 0;
  std::function<void(int)> late;
  {
    auto scope = std::make_unique<CallbackScope>();
    late = scope->Guard([&](int n) { runs += n; });
    late(1);
  }
  late(10);  // the owner is gone: a store commit or HTTP answer arriving now must not touch it
  EXPECT_EQ(runs, 1);
}

TEST(CallbackScope, MoveOnlyCallablesCanBeGuarded) {
  CallbackScope scope;
  auto value = std::make_unique<int>(7);
  int got = 0;
  auto cb = scope.Guard([&got, v = std::move(value)] { got = *v; });
  cb();
  EXPECT_EQ(got, 7);
}

TEST(Hook, CallsTheRegistrationUntilItsSubscriptionIsDestroyed) {
  Hook<void(const std::string&)> hook;
  std::vector<std::string> seen;
  hook("nobody");  // empty: nothing runs
  EXPECT_FALSE(hook);
  {
    Subscription sub = hook.Set([&](const std::string& s) { seen.push_back(s); });
    EXPECT_TRUE(sub);
    EXPECT_TRUE(hook);
    hook("one");
  }
  EXPECT_FALSE(hook) << "a destroyed Subscription unregisters";
  hook("two");
  EXPECT_EQ(seen, (std::vector<std::string>{"one"}));
}

TEST(Hook, ResetUnregistersAndAnEmptyHookReturnsADefault) {
  Hook<std::vector<int>()> source;
  EXPECT_TRUE(source().empty());
  Subscription sub = source.Set([] { return std::vector<int>{1, 2}; });
  EXPECT_EQ(source(), (std::vector<int>{1, 2}));
  sub.Reset();
  sub.Reset();  // idempotent
  EXPECT_FALSE(sub);
  EXPECT_TRUE(source().empty());
}

TEST(Hook, MovingTheHandleKeepsItRegistered) {
  Hook<void()> hook;
  int runs = 0;
  Subscription outer;
  {
    Subscription inner = hook.Set([&] { ++runs; });
    Subscription moved(std::move(inner));
    EXPECT_FALSE(inner);  // NOLINT(bugprone-use-after-move): a moved-from handle holds nothing
    outer = std::move(moved);
  }  // inner and moved are destroyed: the registration lives on in outer
  hook();
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(hook);
  std::vector<Subscription> held;
  held.push_back(std::move(outer));  // e.g. into a container of an owner's subscriptions
  hook();
  EXPECT_EQ(runs, 2);
  held.clear();
  hook();
  EXPECT_EQ(runs, 2);
}

TEST(Hook, MoveAssigningOverAHandleUnregistersWhatItHeld) {
  Hook<void()> a, b;
  int ran_a = 0, ran_b = 0;
  Subscription sub = a.Set([&] { ++ran_a; });
  sub = b.Set([&] { ++ran_b; });
  a();
  b();
  EXPECT_EQ(ran_a, 0);
  EXPECT_EQ(ran_b, 1);
}

TEST(Hook, AReplacedRegistrationsHandleDoesNotRemoveItsSuccessor) {
  Hook<void()> hook;
  int first = 0, second = 0;
  Subscription old_sub = hook.Set([&] { ++first; });
  Subscription new_sub = hook.Set([&] { ++second; });
  old_sub.Reset();
  hook();
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);
}

TEST(Hook, ASubscriptionOutlivingItsHookIsInert) {
  Subscription sub;
  {
    Hook<void()> hook;
    sub = hook.Set([] {});
  }
  sub.Reset();  // the hook is gone: nothing to touch, no crash (ASan would see a use after free)
  EXPECT_FALSE(sub);
}

TEST(Hook, ARegistrationCancelledWhileItRunsFinishesThatCall) {
  Hook<void(int)> hook;
  Subscription sub;
  std::vector<int> seen;
  auto state = std::make_shared<int>(5);  // captured: must stay valid through the call
  sub = hook.Set([&, state](int n) {
    sub.Reset();
    seen.push_back(n + *state);
  });
  hook(1);
  hook(2);
  EXPECT_EQ(seen, (std::vector<int>{6}));
}

}  // namespace
}  // namespace tether::util
