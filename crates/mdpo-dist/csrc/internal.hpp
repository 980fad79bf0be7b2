// Shared between the shim's translation units: the opaque handles and the exception guard.
#pragma once
#include <cstring>
#include <exception>
#include <string>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "shim.h"

struct AmpStore {
  c10::intrusive_ptr<c10d::Store> store;
};
struct AmpGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
};

inline char* amp_dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `f`, turning any C++ exception into an error string (c10 errors without the backtrace).
template <typename F>
char* amp_guard(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return amp_dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return amp_dup(e.what());
  } catch (...) {
    return amp_dup("unknown C++ exception");
  }
}
