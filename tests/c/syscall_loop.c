/* syscall_loop N: makes N getrandom(16) calls and N clock_gettime calls,
 * for benches/notify.rs to time with and without the supervisor. */
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    unsigned char b[16];
    struct timespec t;
    for (long i = 0; i < n; i++) {
        if (getrandom(b, sizeof b, 0) != sizeof b) return 1;
        clock_gettime(CLOCK_REALTIME, &t);
    }
    return 0;
}
