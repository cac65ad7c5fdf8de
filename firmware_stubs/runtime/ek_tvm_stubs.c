/* ek_tvm_stubs.c - the one TVM FFI symbol that kernels compiled for a
 * bare-metal triple call (see shared/DESIGN.md). Kernels call it before
 * returning non-zero; the generated model.c propagates that code, and the
 * agent reports it as ERR_MODEL_FAILED with the code in the RUN answer. The
 * message is kept for a debugger; there is nowhere to print it. */
#include <stdint.h>

const char *ek_last_error_kind;
const char *ek_last_error_first_part;

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts, int32_t num_parts) {
  ek_last_error_kind = kind;
  ek_last_error_first_part = num_parts > 0 ? message_parts[0] : 0;
}
