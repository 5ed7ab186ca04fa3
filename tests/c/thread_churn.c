/* thread_churn: eight threads hammer every syscall the supervisor answers
 * (getrandom, clock_gettime, open of /dev/urandom) while the main thread
 * exits the whole process abruptly, with notifications in flight. The
 * supervisor must drop what died and report the program's own status. */
#include <fcntl.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void *spin(void *arg) {
    unsigned char b[16];
    struct timespec t;
    for (;;) {
        if (getrandom(b, sizeof b, 0) < 0) break;
        clock_gettime(CLOCK_REALTIME, &t);
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd >= 0) close(fd);
    }
    return arg;
}

int main(void) {
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], 0, spin, 0);
    usleep(30000);
    _exit(3);
}
