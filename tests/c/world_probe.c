/* Prints what a process sees of the world's randomness and clocks, then
 * forks a child that prints the same, and waits for it. Used by
 * tests/run_cmd.rs and tests/unprivileged.rs under `tlsign-seccomp run`.
 *
 * Output, one "KEY VALUE" per line; the child's keys start with "child-":
 *   getrandom  hex of getrandom(16 bytes)
 *   urandom    hex of 16 bytes read from /dev/urandom
 *   realtime   clock_gettime(CLOCK_REALTIME) as SECS.NANOS
 *   gettimeofday  SECS.MICROS
 *   time       time(NULL)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(99);
}

static void print_hex(const char *prefix, const char *key, const unsigned char *b, size_t n) {
    printf("%s%s ", prefix, key);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static void report(const char *prefix) {
    unsigned char buf[16];

    if (getrandom(buf, sizeof buf, 0) != (ssize_t)sizeof buf)
        die("getrandom");
    print_hex(prefix, "getrandom", buf, sizeof buf);

    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open /dev/urandom");
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n <= 0)
            die("read /dev/urandom");
        got += (size_t)n;
    }
    close(fd);
    print_hex(prefix, "urandom", buf, sizeof buf);

    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        die("clock_gettime");
    printf("%srealtime %lld.%09ld\n", prefix, (long long)ts.tv_sec, ts.tv_nsec);

    struct timeval tv;
    if (gettimeofday(&tv, NULL) != 0)
        die("gettimeofday");
    printf("%sgettimeofday %lld.%06ld\n", prefix, (long long)tv.tv_sec, (long)tv.tv_usec);

    printf("%stime %lld\n", prefix, (long long)time(NULL));
    fflush(stdout);
}

int main(void) {
    report("");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        report("child-");
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed: status %d\n", status);
        return 98;
    }
    return 0;
}
