// Keeps the error indicator of the interrupted program across the capture's
// callbacks, which run inside the program's own execution.
#pragma once

#include <Python.h>

namespace dv::capture {

class SavedError {
 public:
  SavedError() { PyErr_Fetch(&type_, &value_, &traceback_); }
  ~SavedError() { PyErr_Restore(type_, value_, traceback_); }
  SavedError(const SavedError&) = delete;
  SavedError& operator=(const SavedError&) = delete;

 private:
  PyObject* type_;
  PyObject* value_;
  PyObject* traceback_;
};

}  // namespace dv::capture
