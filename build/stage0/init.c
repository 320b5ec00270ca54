/*
 * Stage 0 of the zone's init: the first program the kernel runs, as /init.
 *
 * Why it exists: the real init is a Nuitka-compiled Python program, and a Nuitka binary starts by reading
 * /proc/self/exe to find its own files, aborting when that fails. The kernel starts /init with an empty
 * rootfs: no /proc yet. So this tiny static program mounts /proc (and devtmpfs on /dev, for the console
 * and the block devices), records when it ran, and execs the compiled init in place: same PID 1, same
 * argv and environment (plus ZONE_STAGE0_NS).
 *
 * Kept deliberately dumb: no allocation, no libc beyond a few syscall wrappers, nothing to configure.
 * If the exec fails we print why and exit, which makes the kernel panic (and QEMU with -no-reboot exit)
 * instead of hanging a zone that can never boot.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef ZONE_INIT_PATH
#define ZONE_INIT_PATH "/lib/zone/init" /* a symlink to the multi-call zone-init: argv[0] "init" */
#endif
#define MAX_ENV 256

static void say(const char *a, const char *b) {
    write(2, "stage0: ", 8);
    write(2, a, strlen(a));
    if (b) {
        write(2, b, strlen(b));
    }
    write(2, "\n", 1);
}

static void mount_or_warn(const char *source, const char *target, const char *fstype, unsigned long flags,
                          const char *data) {
    mkdir(target, 0755);
    if (mount(source, target, fstype, flags, data) != 0 && errno != EBUSY) {
        say("cannot mount ", target);
    }
}

static char *format_u64(char *end, unsigned long long value) {
    *--end = '\0';
    do {
        *--end = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return end;
}

int main(int argc, char **argv, char **envp) {
    struct timespec now;
    static char stamp[64];
    static char *env[MAX_ENV + 2];
    int n = 0;

    (void)argc;
    clock_gettime(CLOCK_BOOTTIME, &now);
    mount_or_warn("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_warn("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");

    if (fcntl(0, F_GETFD) < 0) { /* no console on fds 0-2 (no /dev/console node at unpack): open it now */
        int fd = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2) {
                close(fd);
            }
        }
    }

    char *digits = format_u64(stamp + sizeof(stamp), (unsigned long long)now.tv_sec * 1000000000ULL +
                                                         (unsigned long long)now.tv_nsec);
    digits -= strlen("ZONE_STAGE0_NS=");
    memcpy(digits, "ZONE_STAGE0_NS=", strlen("ZONE_STAGE0_NS="));
    for (; envp && envp[n] && n < MAX_ENV; n++) {
        env[n] = envp[n];
    }
    env[n++] = digits;
    env[n] = NULL;

    argv[0] = (char *)ZONE_INIT_PATH;
    execve(ZONE_INIT_PATH, argv, env);
    say("cannot exec " ZONE_INIT_PATH ": ", strerror(errno));
    return 1;
}
