/* A test daemon that does what a threaded daemon does after its chroot (ntpd's DNS thread,
 * ntp_dns.c): a thread ends with pthread_exit(), or is cancelled. glibc then dlopen()s
 * libgcc_s.so.1 for the unwinder (misc/unwind-link.c __libc_unwind_link_get, called from
 * nptl/pthread_exit.c and nptl/pthread_cancel.c) — after the chroot, so from the jail; without
 * it glibc prints "libgcc_s.so.1 must be installed for pthread_exit to work" (or "… for
 * pthread_cancel to work") and aborts.
 *
 *   exit_thread JAIL exit|cancel|dlopen [getpwnam]
 *
 *   exit    a thread calls pthread_exit(); prints "thread exited" when it was joined
 *   cancel  a thread blocked in pause() is cancelled; prints "thread cancelled"
 *   dlopen  dlopen("libgcc_s.so.1") as glibc does; prints "loaded PATH" (the file the loader
 *           found in the jail) or "dlopen failed: <dlerror>"
 *   getpwnam  look root up before the chroot, as ntpd's sandbox() does (with nsswitch's
 *           `files systemd` that dlopen()s libnss_systemd and maps the host's ld.so.cache)
 *
 * Nothing here links libgcc_s (plain C): it is loaded only where glibc asks for it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void *ends_with_pthread_exit(void *arg) {
    (void)arg;
    pthread_exit(NULL);
}

static void *waits(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exit_thread JAIL exit|cancel|dlopen [getpwnam]\n");
        return 64;
    }
    if (argc > 3 && strcmp(argv[3], "getpwnam") == 0 && getpwnam("root") == NULL) {
        fprintf(stderr, "getpwnam(root) failed\n");
        return 1;
    }
    if (chroot(argv[1]) != 0 || chdir("/") != 0) {
        perror("chroot");
        return 1;
    }
    pthread_t thread;
    if (strcmp(argv[2], "dlopen") == 0) {
        void *handle = dlopen("libgcc_s.so.1", RTLD_NOW);
        if (handle == NULL) {
            printf("dlopen failed: %s\n", dlerror());
            return 1;
        }
        Dl_info info;
        void *symbol = dlsym(handle, "_Unwind_GetCFA");
        if (symbol == NULL || dladdr(symbol, &info) == 0) {
            printf("dlopen: no _Unwind_GetCFA\n");
            return 1;
        }
        printf("loaded %s\n", info.dli_fname);
        return 0;
    }
    int cancel = strcmp(argv[2], "cancel") == 0;
    if (pthread_create(&thread, NULL, cancel ? waits : ends_with_pthread_exit, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    if (cancel && pthread_cancel(thread) != 0) {
        fprintf(stderr, "pthread_cancel failed\n");
        return 1;
    }
    void *result;
    if (pthread_join(thread, &result) != 0) {
        fprintf(stderr, "pthread_join failed\n");
        return 1;
    }
    printf(cancel ? "thread cancelled\n" : "thread exited\n");
    return 0;
}
