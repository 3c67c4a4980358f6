/*
 * pause - Kubernetes sandbox "pause" process for containerd-shim-wasmedge.
 *
 * Holds the pod's namespaces open by blocking forever. Behaviour:
 *   - SIGINT / SIGTERM: exit 0 cleanly.
 *   - SIGCHLD: reap every exited child (it may be PID 1 of the sandbox).
 *   - "-v": print the version string and exit 0.
 *
 * Build: gcc -static -Os -Wall -Wextra -o pause scripts/pause/pause.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "pause (containerd-shim-wasmedge) 1.0"

static void on_terminate(int signo)
{
	(void)signo;
	_exit(0);
}

static void on_child(int signo)
{
	int saved_errno = errno;
	(void)signo;
	/* Reap all children that have exited; stop when none are left. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved_errno;
}

static int install(int signo, void (*handler)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			printf("%s\n", PAUSE_VERSION);
			return 0;
		}
		fprintf(stderr, "pause: unknown argument '%s'\n", argv[i]);
		fprintf(stderr, "usage: %s [-v]\n", argv[0]);
		return 2;
	}

	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1\n");

	if (install(SIGINT, on_terminate, 0) < 0 ||
	    install(SIGTERM, on_terminate, 0) < 0 ||
	    install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
		perror("pause: sigaction");
		return 1;
	}

	for (;;)
		pause();

	/* not reached */
	return 42;
}
