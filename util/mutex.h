// Mutex, MutexLock, CondVar: std::mutex and std::condition_variable carrying Clang's thread-safety
// attributes, so that every clang build (-Wthread-safety, see the top CMakeLists.txt) checks that
// a member marked GUARDED_BY(mu_) is only touched with mu_ held, as LevelDB's port::Mutex does.
//
// - GCC ignores the attributes; the classes cost what std::mutex costs.
// - libstdc++'s std::mutex carries no attributes, hence the wrappers.
// - Any thread. The one copy for every module (store/, gateway/, util/); each lock's members name
//   it with GUARDED_BY, so a new access without the lock fails the clang build.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define TETHER_THREAD_ATTRIBUTE(x) __attribute__((x))
#else
#define TETHER_THREAD_ATTRIBUTE(x)
#endif

#define CAPABILITY(x) TETHER_THREAD_ATTRIBUTE(capability(x))
#define SCOPED_CAPABILITY TETHER_THREAD_ATTRIBUTE(scoped_lockable)
#define GUARDED_BY(x) TETHER_THREAD_ATTRIBUTE(guarded_by(x))
#define REQUIRES(...) TETHER_THREAD_ATTRIBUTE(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) TETHER_THREAD_ATTRIBUTE(acquire_capability(__VA_ARGS__))
#define RELEASE(...) TETHER_THREAD_ATTRIBUTE(release_capability(__VA_ARGS__))
#define EXCLUDES(...) TETHER_THREAD_ATTRIBUTE(locks_excluded(__VA_ARGS__))

namespace tether::util {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable. Wait() takes the Mutex the caller holds (always the same one per CondVar).
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases `mu` while it sleeps and holds it again on return (spurious wake-ups happen:
  // callers loop on their condition).
  void Wait(Mutex* mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace tether::util
