/* A test daemon that does what a chrooted TLS daemon does with its random generator:
 * seed before chroot, chroot, drop privileges, then (on SIGUSR1, standing in for "an hour
 * later") close the kept device fd, draw from the generator and force a reseed from the
 * system source. Each result is one line on stdout: "reseed ok" or "reseed failed: <why>".
 *
 *   reseed_daemon JAIL UID GID
 *
 * Built three ways (no headers: the prototypes are declared by hand, so it builds against a
 * library taken out of a wheel):
 *   -DAPI_OSSL11  OpenSSL 1.1.1: RAND_DRBG_bytes then RAND_DRBG_reseed on the master DRBG
 *   -DAPI_OSSL3   OpenSSL 3:     EVP_RAND_generate then EVP_RAND_reseed on the primary DRBG
 *   -DAPI_GNUTLS  GnuTLS:        gnutls_rnd_refresh then gnutls_rnd(GNUTLS_RND_RANDOM)
 * The draw before the reseed is the daemon's "next generate": a DRBG left in error state by a
 * failed reseed is re-instantiated there, if it can be.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(API_OSSL11) || defined(API_OSSL3)
unsigned long ERR_get_error(void);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
int OPENSSL_init_crypto(unsigned long long opts, const void *settings);
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
int gnutls_rnd(int level, void *data, size_t len);
void gnutls_rnd_refresh(void);
const char *gnutls_strerror(int error);
#define GNUTLS_RND_RANDOM 1
#endif

static void say(const char *what, int ok) {
    char line[1024];
    size_t used = (size_t)snprintf(line, sizeof line, "%s %s", what, ok ? "ok" : "failed:");
#if defined(API_OSSL11) || defined(API_OSSL3)
    unsigned long e;
    while (!ok && (e = ERR_get_error()) != 0 && used + 2 < sizeof line) {
        line[used++] = ' ';
        ERR_error_string_n(e, line + used, sizeof line - used);
        used = strlen(line);
    }
#endif
    (void)used;
    printf("%s\n", line);
    fflush(stdout);
}

int main(int argc, char **argv) {
    unsigned char buf[16];
    sigset_t set;
    int sig;
    if (argc != 4) {
        fprintf(stderr, "usage: %s JAIL UID GID\n", argv[0]);
        return 2;
    }
#if defined(API_OSSL11) || defined(API_OSSL3)
    OPENSSL_init_crypto(0x02, NULL); /* error strings */
    void *drbg =
#ifdef API_OSSL11
        RAND_DRBG_get0_master();
#else
        RAND_get0_primary(NULL);
#endif
    say("seed", drbg != NULL && RAND_bytes(buf, sizeof buf) == 1);
#else
    say("seed", gnutls_rnd(GNUTLS_RND_RANDOM, buf, sizeof buf) == 0);
#endif
    gid_t gid = (gid_t)atol(argv[3]);
    if (chroot(argv[1]) != 0 || chdir("/") != 0 || setgroups(1, &gid) != 0 ||
        setgid(gid) != 0 || setuid((uid_t)atol(argv[2])) != 0) {
        perror("jail");
        return 1;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
#if defined(API_OSSL11) || defined(API_OSSL3)
    /* As a daemon that closes its descriptors after chroot: the device fd OpenSSL kept from
     * before chroot is gone, so its next reseed opens dev/urandom in the jail. */
    RAND_keep_random_devices_open(0);
#endif
    say("jailed", 1);
    while (sigwait(&set, &sig) == 0 && sig == SIGUSR1) {
#if defined(API_OSSL11) || defined(API_OSSL3)
        RAND_keep_random_devices_open(0);
        while (ERR_get_error() != 0) {
        }
#ifdef API_OSSL11
        int drew = RAND_DRBG_bytes(drbg, buf, sizeof buf) == 1;
        int reseeded = drew && RAND_DRBG_reseed(drbg, NULL, 0, 0) == 1;
#else
        int drew = EVP_RAND_generate(drbg, buf, sizeof buf, 0, 0, NULL, 0) == 1;
        int reseeded = drew && EVP_RAND_reseed(drbg, 0, NULL, 0, NULL, 0) == 1;
#endif
        say("reseed", drew && reseeded);
#else
        gnutls_rnd_refresh();
        int code = gnutls_rnd(GNUTLS_RND_RANDOM, buf, sizeof buf);
        if (code == 0) {
            say("reseed", 1);
        } else {
            printf("reseed failed: %s (%d)\n", gnutls_strerror(code), code);
            fflush(stdout);
        }
#endif
    }
    return 0;
}
