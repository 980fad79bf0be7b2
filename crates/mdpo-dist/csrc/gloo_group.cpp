// Creates c10d's ProcessGroupGloo (compiled into libtorch_cpu). ProcessGroupGloo.hpp includes
// gloo's headers, which the torch wheel does not ship; they are needed to *parse* the class only.
// This file calls nothing of gloo itself: Options::create_default, createDeviceForHostname and
// the constructor are libtorch exports, and every gloo-typed member of ProcessGroupGloo and its
// Options is held through a pointer or a std::vector of shared_ptr, so the object's size and
// layout do not depend on which gloo snapshot the headers come from. build.rs checks the
// compiled object references no gloo symbol.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "internal.hpp"

extern "C" {

char* amp_c10d_gloo_new(AmpStore* store, int rank, int world, int64_t timeout_ms,
                        const char* hostname, AmpGroup** out) {
  return amp_guard([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> opts;
    if (hostname != nullptr) {
      opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(std::string(hostname)));
    } else {
      opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world, opts);
    *out = new AmpGroup{pg};
  });
}

}  // extern "C"
