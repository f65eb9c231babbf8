// What the daemon derives from a Config: the store's options, the queue limits a reload applies,
// the sync roots, and the configuration a reload may run (the keys only a restart applies keep
// their running values). Pure functions of their arguments: any thread (a reload runs
// RunnableConfig on libuv's pool); no I/O, no failure paths.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "store/store.h"

namespace tether {

std::map<std::string, store::QueueLimits> QueueLimitsFrom(const Config& c);
store::StoreOptions StoreOptionsFrom(const Config& c);
std::set<std::string> SyncRoots(const Config& c);
// `next` with the parts only a restart applies reset to their values in `started`; the key
// paths of those that differ are appended to *restart.
Config RunnableConfig(const Config& started, Config next, std::vector<std::string>* restart);

}  // namespace tether
