/* Tries the two ways around the world's view of files and sockets, and
 * prints what each returned. Used by tests/backends.rs under
 * `tlsign-seccomp run`, where both must fail with ENOSYS.
 *
 * Output, one "KEY RESULT" per line, RESULT being "ok" or the errno's
 * number:
 *   openat2         openat2(AT_FDCWD, "/dev/urandom", O_RDONLY | O_CLOEXEC)
 *   io_uring_setup  io_uring_setup(1, params)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* struct open_how (linux/openat2.h) and io_uring_params, sized as the
 * kernel wants; only the flags are set. */
struct how {
    uint64_t flags, mode, resolve;
};

static void result(const char *key, long r) {
    if (r < 0)
        printf("%s %d\n", key, errno);
    else
        printf("%s ok\n", key);
}

int main(void) {
    struct how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC;
    result("openat2", syscall(SYS_openat2, AT_FDCWD, "/dev/urandom", &how, sizeof how));

    unsigned char params[120];
    memset(params, 0, sizeof params);
    result("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    return 0;
}
