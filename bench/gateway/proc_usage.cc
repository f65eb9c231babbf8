#include "bench/gateway/proc_usage.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace tether::bench {

ProcessMemory ReadProcessMemory(pid_t pid) {
  ProcessMemory m;
  if (pid <= 0) return m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long value;
  while (in >> key) {
    if (key == "VmRSS:" && in >> value) m.rss_kb = value;
    else if (key == "RssAnon:" && in >> value) m.anon_kb = value;
    else if (key == "RssFile:" && in >> value) m.file_kb = value;
  }
  return m;
}

ServerCpu ReadServerCpu(pid_t pid) {
  ServerCpu c;
  if (pid <= 0) return c;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return c;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/stat");
    std::string line;
    std::getline(in, line);
    const size_t open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    const std::string comm = line.substr(open + 1, close - open - 1);
    // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
    std::vector<std::string> f;
    size_t p = close + 2;
    while (p < line.size() && f.size() < 13) {
      const size_t q = line.find(' ', p);
      f.push_back(line.substr(p, q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
    if (f.size() < 13) continue;
    const double s = (std::stod(f[11]) + std::stod(f[12])) / tick;
    if (std::atoi(e->d_name) == pid) c.loop += s;
    else if (comm == "tether-writer") c.writer += s;
    else c.other += s;
  }
  closedir(d);
  return c;
}

uint64_t RaiseFileLimit() {
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

}  // namespace tether::bench
