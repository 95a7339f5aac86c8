/* One cell of the entropy matrix (tests/entropy_truth.py): a daemon's life with one crypto
 * library. Initialise and seed the library before chroot (as a daemon does), chroot, drop to
 * UID/GID, then make the library go back to the system's entropy source inside the jail.
 *
 *   entropy_cell JAIL UID GID MARKER CLOSE MODE
 *
 *   MARKER 1: first create OpenSSL's "random is seeded" marker, SysV shm key 114, in this
 *             process's IPC namespace (run under `unshare --ipc`: the namespace dies with it)
 *   CLOSE  1: after chroot, close the device fds the library kept from before chroot, as a
 *             daemon that closes its descriptors does (the library's own call where it has
 *             one, then every fd >= 3); 0: keep them (the "only a kept fd" jail)
 *   MODE once: reseed at once and exit; wait: reseed on each SIGUSR1, exit on SIGTERM (a
 *             live process for `jailshim doctor --pid`)
 *   drbg-first (OpenSSL only, optional): take the DRBG before the first RAND_bytes (below)
 *
 * One line per step on stdout: "library NAME VERSION", "start ok" | "start failed: WHY",
 * "jailed kept=N marker=0|1" (device fds to /dev/urandom or /dev/random still open after
 * chroot; whether shm key 114 exists now: OpenSSL creates it on a kernel < 4.8),
 * "reseed ok" | "reseed failed: WHY".
 *
 * Built once per library (no headers: the prototypes are declared by hand, so it builds
 * against a library taken out of a wheel, and against Debian's runtime packages only):
 *   -DAPI_OSSL11  OpenSSL 1.1.1: RAND_bytes before chroot; RAND_DRBG_bytes then
 *                 RAND_DRBG_reseed on the master DRBG inside
 *   -DAPI_OSSL3   OpenSSL 3: RAND_bytes before chroot; EVP_RAND_generate then
 *                 EVP_RAND_reseed on the primary DRBG inside
 *   -DAPI_GNUTLS  GnuTLS: gnutls_global_init + gnutls_rnd before chroot; gnutls_rnd_refresh
 *                 then gnutls_rnd(GNUTLS_RND_KEY) inside
 *   -DAPI_SODIUM  libsodium: sodium_init + randombytes_buf before chroot; randombytes_buf
 *                 inside. A failure there is sodium_misuse(), which aborts the process: the
 *                 misuse handler reports it and jumps back instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#if defined(API_OSSL11) || defined(API_OSSL3)
#define API_OPENSSL
unsigned long ERR_get_error(void);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
int OPENSSL_init_crypto(unsigned long long opts, const void *settings);
const char *OpenSSL_version(int type);
void RAND_keep_random_devices_open(int keep);
int RAND_bytes(unsigned char *buf, int num);
#endif
#ifdef API_OSSL11
void *RAND_DRBG_get0_master(void);
int RAND_DRBG_bytes(void *drbg, unsigned char *out, size_t outlen);
int RAND_DRBG_reseed(void *drbg, const unsigned char *adin, size_t adinlen, int pr);
#endif
#ifdef API_OSSL3
void *RAND_get0_primary(void *libctx);
int EVP_RAND_generate(void *ctx, unsigned char *out, size_t outlen, unsigned int strength,
                      int pr, const unsigned char *adin, size_t adinlen);
int EVP_RAND_reseed(void *ctx, int pr, const unsigned char *ent, size_t entlen,
                    const unsigned char *adin, size_t adinlen);
#endif
#ifdef API_GNUTLS
int gnutls_global_init(void);
const char *gnutls_check_version(const char *req);
int gnutls_rnd(int level, void *data, size_t len);
void gnutls_rnd_refresh(void);
const char *gnutls_strerror(int error);
#define GNUTLS_RND_RANDOM 1
#define GNUTLS_RND_KEY 2
#endif
#ifdef API_SODIUM
int sodium_init(void);
const char *sodium_version_string(void);
int sodium_set_misuse_handler(void (*handler)(void));
void randombytes_buf(void *buf, size_t size);
int randombytes_close(void);
static sigjmp_buf misused;
static void on_misuse(void) { siglongjmp(misused, 1); }
#endif

static void say(const char *step, int ok, const char *why) {
    char line[1024];
    size_t used = (size_t)snprintf(line, sizeof line, "%s %s", step, ok ? "ok" : "failed:");
    if (!ok && why != NULL)
        used += (size_t)snprintf(line + used, sizeof line - used, " %s", why);
#ifdef API_OPENSSL
    unsigned long e;
    while (!ok && (e = ERR_get_error()) != 0 && used + 2 < sizeof line) {
        line[used++] = ' ';
        ERR_error_string_n(e, line + used, sizeof line - used);
        used = strlen(line);
    }
#endif
    printf("%s\n", line);
    fflush(stdout);
}

/* Device fds to /dev/urandom (1,9) or /dev/random (1,8), whoever opened them. */
static int random_device_fds(void) {
    int count = 0;
    struct stat st;
    for (int fd = 0; fd < 1024; fd++) {
        if (fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
            (minor(st.st_rdev) == 8 || minor(st.st_rdev) == 9))
            count++;
    }
    return count;
}

#ifdef API_OPENSSL
static void *drbg;
static int drbg_first;
static void *get_drbg(void) {
#ifdef API_OSSL11
    return RAND_DRBG_get0_master(); /* instantiates (seeds) on first use */
#else
    return RAND_get0_primary(NULL);
#endif
}
#endif

static void start(void) {
    unsigned char buf[16];
#ifdef API_OPENSSL
    printf("library %s\n", OpenSSL_version(0));
    OPENSSL_init_crypto(0x02, NULL); /* error strings, loaded before chroot */
    /* A daemon's first draw (RAND_bytes, or SSL_CTX_new's) runs OpenSSL's RAND init before
     * the DRBG seeds. Taking the DRBG first (drbg-first: as jailshim's own probe does) seeds
     * it before that init, whose ossl_rand_pool_init() (rand_pool_init() in 1.1.1b) then sets
     * the device fd the seed opened to -1 without closing it: the fd stays open, forgotten,
     * and the reseed in the jail opens the device again. */
    int drew = drbg_first || RAND_bytes(buf, sizeof buf) == 1;
    drbg = get_drbg();
    say("start", drew && drbg != NULL && (!drbg_first || RAND_bytes(buf, sizeof buf) == 1),
        drbg == NULL ? "no DRBG" : NULL);
#elif defined(API_GNUTLS)
    printf("library GnuTLS %s\n", gnutls_check_version(NULL));
    int code = gnutls_global_init();
    if (code == 0)
        code = gnutls_rnd(GNUTLS_RND_RANDOM, buf, sizeof buf);
    say("start", code == 0, code == 0 ? NULL : gnutls_strerror(code));
#else
    printf("library libsodium %s\n", sodium_version_string());
    if (sigsetjmp(misused, 1) != 0) {
        say("start", 0, "sodium_misuse() (the process would abort)");
        return;
    }
    int code = sodium_init();
    if (code >= 0)
        randombytes_buf(buf, sizeof buf);
    say("start", code >= 0, "sodium_init() < 0");
#endif
}

static void close_kept_fds(void) {
#ifdef API_OPENSSL
    RAND_keep_random_devices_open(0);
#elif defined(API_SODIUM)
    randombytes_close(); /* the next draw initialises again, inside the jail */
#endif
    /* GnuTLS 3.7 keeps none (it opens the device for each read); and any library's fd dies
     * with a daemon's close-everything loop */
    closefrom(3);
}

static void reseed(void) {
    unsigned char buf[16];
#ifdef API_OPENSSL
    while (ERR_get_error() != 0) {
    }
    if (drbg == NULL) /* the seed failed before chroot: a daemon that carries on tries again */
        drbg = get_drbg();
    if (drbg == NULL) {
        say("reseed", 0, "no DRBG");
        return;
    }
    /* the draw first: a DRBG left in error state re-instantiates there, if it can */
#ifdef API_OSSL11
    int drew = RAND_DRBG_bytes(drbg, buf, sizeof buf) == 1;
    int reseeded = drew && RAND_DRBG_reseed(drbg, NULL, 0, 0) == 1;
#else
    int drew = EVP_RAND_generate(drbg, buf, sizeof buf, 0, 0, NULL, 0) == 1;
    int reseeded = drew && EVP_RAND_reseed(drbg, 0, NULL, 0, NULL, 0) == 1;
#endif
    say("reseed", drew && reseeded, NULL);
#elif defined(API_GNUTLS)
    char why[256];
    gnutls_rnd_refresh();
    int code = gnutls_rnd(GNUTLS_RND_KEY, buf, sizeof buf);
    snprintf(why, sizeof why, "%s (%d)", code == 0 ? "" : gnutls_strerror(code), code);
    say("reseed", code == 0, why);
#else
    if (sigsetjmp(misused, 1) != 0) {
        say("reseed", 0, "sodium_misuse() (the process would abort)");
        return;
    }
    randombytes_buf(buf, sizeof buf);
    say("reseed", 1, NULL);
#endif
}

int main(int argc, char **argv) {
    char kept[64];
    sigset_t set;
    int sig;
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s JAIL UID GID MARKER CLOSE once|wait [drbg-first]\n",
                argv[0]);
        return 2;
    }
#ifdef API_OPENSSL
    drbg_first = argc == 8 && strcmp(argv[7], "drbg-first") == 0;
#endif
    if (atoi(argv[4]) && shmget(114, 1, IPC_CREAT | 0644) == -1) {
        perror("shmget(114)");
        return 3;
    }
#ifdef API_SODIUM
    sodium_set_misuse_handler(on_misuse);
#endif
    start();
    gid_t gid = (gid_t)atol(argv[3]);
    if (chroot(argv[1]) != 0 || chdir("/") != 0 || setgroups(1, &gid) != 0 ||
        setgid(gid) != 0 || setuid((uid_t)atol(argv[2])) != 0) {
        perror("jail");
        return 4;
    }
    if (atoi(argv[5]))
        close_kept_fds();
    /* blocked before "jailed" is said: a SIGUSR1 sent on reading it must not kill us */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* the marker as the jailed daemon's namespace has it now: OpenSSL may have made it */
    snprintf(kept, sizeof kept, "jailed kept=%d marker=%d", random_device_fds(),
             shmget(114, 1, 0) != -1);
    puts(kept);
    fflush(stdout);
    if (strcmp(argv[6], "wait") != 0) {
        reseed();
        return 0;
    }
    while (sigwait(&set, &sig) == 0 && sig == SIGUSR1)
        reseed();
    return 0;
}
