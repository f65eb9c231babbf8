#include "store/group_committer.h"

#include <algorithm>

#include <pthread.h>
#include <sys/statvfs.h>

#include <cerrno>

namespace tether::store {
namespace {

// LMDB turns a write cut short by a full disk into EIO (mdb_page_flush): EIO while the store's
// filesystem has less than this left is the disk being full, not a broken disk.
constexpr uint64_t kDiskFullBytes = 1 << 20;

bool DiskFull(const std::string& dir) {
  struct statvfs st;
  return statvfs(dir.c_str(), &st) == 0 && static_cast<uint64_t>(st.f_bavail) * st.f_frsize < kDiskFullBytes;
}

bool IsExhaustion(int rc, const std::string& dir) {
  return rc == MDB_MAP_FULL || rc == MDB_TXN_FULL || rc == ENOSPC || (rc == EIO && DiskFull(dir));
}

Status FromRc(int rc, const char* what, const std::string& dir) {
  const bool full = IsExhaustion(rc, dir);
  return Status::Error(full ? StatusCode::kFull : StatusCode::kIoError,
                       std::string(what) + ": " + mdb_strerror(rc) + (full && rc == EIO ? " (filesystem full)" : ""));
}

}  // namespace

GroupCommitter::GroupCommitter(LmdbEnv* env, BatchApplier* applier, const StoreOptions& options,
                               Handback handback)
    : env_(env), applier_(applier), options_(options), handback_(std::move(handback)) {
  Reload();
  thread_ = std::thread([this] { Run(); });
}

GroupCommitter::~GroupCommitter() { Stop(); }

void GroupCommitter::Submit(WriteBatch batch, Deliver deliver) {
  {
    util::MutexLock lock(&mu_);
    if (!stopping_) {
      pending_.push_back(Request{std::move(batch), std::move(deliver), false});
      if (waiting_) cv_.Signal();
      return;
    }
  }
  BatchResult closed;
  closed.status = Status::Error(StatusCode::kClosed, "store is closing");
  deliver(std::move(closed));
}

void GroupCommitter::SubmitAll(std::vector<Request>* requests) {
  if (requests->empty()) return;
  for (Request& r : *requests) r.hand_back = handback_ != nullptr;
  {
    util::MutexLock lock(&mu_);
    if (!stopping_) {
      if (pending_.empty()) {
        pending_.swap(*requests);
      } else {
        pending_.insert(pending_.end(), std::make_move_iterator(requests->begin()),
                        std::make_move_iterator(requests->end()));
      }
      requests->clear();
      if (waiting_) cv_.Signal();
      return;
    }
  }
  std::vector<Done> back;
  for (Request& r : *requests) {
    BatchResult closed;
    closed.status = Status::Error(StatusCode::kClosed, "store is closing");
    if (r.hand_back) {
      back.push_back(Done{std::move(r.batch), std::move(r.deliver), std::move(closed)});
    } else if (r.deliver) {
      r.deliver(std::move(closed));
    }
  }
  requests->clear();
  if (!back.empty()) handback_(std::move(back));
}

void GroupCommitter::Stop() {
  {
    util::MutexLock lock(&mu_);
    stopping_ = true;
    cv_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void GroupCommitter::Reload() {
  ReadTxn txn(*env_);
  applier_->Load(txn.get(), /*at_last_commit=*/true);
}

void GroupCommitter::Run() {
  // Named so top -H, perf and the end-to-end bench can tell the writer's CPU time from the loop's.
  pthread_setname_np(pthread_self(), "tether-writer");
  std::vector<Request> taken;
  while (true) {
    {
      util::MutexLock lock(&mu_);
      waiting_ = true;
      while (!stopping_ && pending_.empty()) cv_.Wait(&mu_);
      waiting_ = false;
      if (pending_.empty()) return;  // stopping and drained
      taken.swap(pending_);  // all of it: what arrives meanwhile waits for the next round
    }
    const size_t max = std::max<uint32_t>(1, options_.max_group_batches);
    for (size_t lo = 0; lo < taken.size(); lo += max) {
      CommitGroup(std::span<Request>(taken).subspan(lo, std::min(max, taken.size() - lo)));
    }
    taken.clear();
  }
}

void GroupCommitter::CommitGroup(std::span<Request> group) {
  std::vector<BatchResult> results(group.size());
  // The ladder; each rung is taken when the one before cannot commit:
  //   1. the whole group in one txn (after a batch failed there, the next 64 groups start with a
  //      nested txn per batch, so sustained rejections do not double the work);
  //   2. the map grown (up to options.map_max), then 1 again;
  //   3. one txn per batch, acknowledgement-only batches in pieces (AckInPieces). Taken at once
  //      near the end of the space (within 4 reserves), so no commit takes the pages the next one
  //      needs (LMDB reuses a commit's freed pages only two commits later).
  bool low = SpaceLow(4);
  while (!low) {  // (so not within one reserve either: the applier refuses nothing for space)
    const bool nested = nested_groups_left_ > 0;
    if (nested) nested_groups_left_--;
    Outcome outcome = TryGroup(group, &results, nested, ApplyMode{});
    if (outcome == Outcome::kDone) break;
    if (outcome == Outcome::kNeedNested) {
      nested_groups_left_ = 64;
      continue;
    }
    if (env_->GrowMap(options_.map_max)) continue;
    low = true;
  }
  for (size_t i = 0; low && i < group.size(); ++i) {
    std::span<Request> one = group.subspan(i, 1);
    std::vector<BatchResult> r(1);
    bool fits = true;
    if (one[0].batch.only_acks()) {
      fits = AckInPieces(one, &r);
    } else {
      while (TryGroup(one, &r, /*nested=*/true, ApplyMode{.space_low = SpaceLow(1)}) == Outcome::kExhausted) {
        if (!(fits = env_->GrowMap(options_.map_max))) break;
      }
    }
    if (!fits) {
      r[0] = BatchResult{};
      r[0].status = Status::Error(StatusCode::kFull, "store is full (map or disk); retry later");
    }
    results[i] = std::move(r[0]);
  }
  groups_++;
  std::vector<Done> back;
  for (size_t i = 0; i < group.size(); ++i) {
    Request& q = group[i];
    if (q.hand_back) {
      back.push_back(Done{std::move(q.batch), std::move(q.deliver), std::move(results[i])});
    } else if (q.deliver) {
      q.deliver(std::move(results[i]));
    }
  }
  if (!back.empty()) handback_(std::move(back));
}

// Commits the acknowledgements of (*one)[0] a piece at a time, each piece its own commit; halves
// the piece while it does not fit. False if a single acknowledgement does not fit.
bool GroupCommitter::AckInPieces(std::span<Request> one, std::vector<BatchResult>* r) {
  size_t piece = 64;
  while (true) {
    Outcome outcome = TryGroup(one, r, /*nested=*/true, ApplyMode{.space_low = SpaceLow(1), .ack_budget = piece});
    if (outcome == Outcome::kExhausted) {
      if (env_->GrowMap(options_.map_max)) continue;
      if (piece == 1) return false;
      piece /= 2;
      continue;
    }
    if (outcome != Outcome::kCutShort) return true;
    piece = std::min<size_t>(piece * 2, 64);
  }
}

bool GroupCommitter::SpaceLow(uint32_t times) {
  bool low = env_->SpaceLow(times);
  while (low && env_->GrowMap(options_.map_max)) low = env_->SpaceLow(times);
  return low;
}

GroupCommitter::Outcome GroupCommitter::TryGroup(std::span<Request> group, std::vector<BatchResult>* results,
                                                 bool nested, const ApplyMode& mode) {
  MDB_txn* parent = nullptr;
  int rc = mdb_txn_begin(env_->env(), nullptr, 0, &parent);
  if (rc) {
    for (auto& r : *results) r = BatchResult{FromRc(rc, "begin write txn", env_->path()), {}, {}, 0};
    return Outcome::kDone;
  }
  auto abort_group = [&] {
    mdb_txn_abort(parent);
    Reload();
    return Outcome::kExhausted;
  };
  bool cut_short = false;
  if (!nested) {  // every batch straight into the group's txn, the counters written once
    ApplyMode once = mode;
    once.flush = false;
    for (size_t i = 0; i < group.size(); ++i) {
      BatchResult& result = (*results)[i];
      result = BatchResult{};
      Applied applied = applier_->Apply(parent, group[i].batch, once, &result);
      if (!applied.ok()) {
        mdb_txn_abort(parent);
        Reload();
        return applied.exhausted ? Outcome::kExhausted : Outcome::kNeedNested;
      }
      cut_short |= applied.cut_short;
    }
    if (!applier_->FlushCounters(parent).ok()) return abort_group();
  }
  for (size_t i = 0; nested && i < group.size(); ++i) {
    BatchResult& result = (*results)[i];
    result = BatchResult{};
    MDB_txn* child = nullptr;
    if ((rc = mdb_txn_begin(env_->env(), parent, 0, &child))) {
      if (IsExhaustion(rc, env_->path())) return abort_group();
      result.status = FromRc(rc, "begin nested txn", env_->path());
      continue;
    }
    Applied applied = applier_->Apply(child, group[i].batch, mode, &result);
    if (applied.ok()) {
      if ((rc = mdb_txn_commit(child))) return abort_group();  // parent state unknown: redo all
      cut_short |= applied.cut_short;
      continue;
    }
    mdb_txn_abort(child);
    if (applied.exhausted) return abort_group();
    if (applied.touched) applier_->Load(parent);  // back to what the parent holds
    result = BatchResult{};
    result.status = std::move(applied.status);
    if (result.status.code == StatusCode::kRejected) {
      if (!applier_->CountRejected(parent).ok()) return abort_group();
    }
  }
  if (!applier_->EvictTree(parent).ok()) return abort_group();
  if ((rc = mdb_txn_commit(parent))) {
    Reload();
    if (IsExhaustion(rc, env_->path())) return Outcome::kExhausted;
    for (auto& r : *results) r = BatchResult{FromRc(rc, "commit", env_->path()), {}, {}, 0};
    return Outcome::kDone;
  }
  applier_->Committed();
  return cut_short ? Outcome::kCutShort : Outcome::kDone;
}

}  // namespace tether::store
