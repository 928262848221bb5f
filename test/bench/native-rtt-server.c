/*
 * Blocking C echo server for test/bench/native-rtt.mjs (the kernel floor): accepts one connection, reads each
 * message exactly (16-byte header, u32 LE size at offset 4, then the rest), answers a 16-byte reply header.
 * Usage: native-rtt-server <path>   (creates the socket, prints "ready", exits at EOF)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int read_full(int fd, uint8_t *p, size_t n) {
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
  unlink(argv[1]);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 8) < 0) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return 1;
  static uint8_t buf[1 << 20];
  for (;;) {
    if (read_full(fd, buf, 16) < 0) break;
    uint32_t size;
    memcpy(&size, buf + 4, 4);
    if (size < 16 || size > sizeof buf) break;
    if (size > 16 && read_full(fd, buf + 16, size - 16) < 0) break;
    uint8_t rep[16] = {0};
    memcpy(rep, buf, 4); /* id, command */
    uint32_t rsize = 16, flags = 1;
    memcpy(rep + 4, &rsize, 4);
    memcpy(rep + 8, &flags, 4);
    if (write(fd, rep, sizeof rep) != (ssize_t)sizeof rep) break;
  }
  close(fd);
  close(l);
  unlink(argv[1]);
  return 0;
}
