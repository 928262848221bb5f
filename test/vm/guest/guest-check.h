// One line per check ("ok - ..." / "FAIL - ...") and the closing `N passed, N failed` that the host-side tests
// read, shared by the static guest test programs. Each program is built from a single .c file; this header sits
// beside them, and buildGuestProgram (test/lib/guest.ts) hashes it into the cache key.
#ifndef GUEST_CHECK_H
#define GUEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

static inline void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s - ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
  if (ok)
    passed++;
  else
    failed++;
}

static inline int finish(void) {
  printf("%d passed, %d failed\n", passed, failed);
  fflush(stdout);
  return failed ? 1 : 0;
}

#endif
