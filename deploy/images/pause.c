/* The pod sandbox's process ("pause" image) for test nodes without a registry: sleeps until
 * SIGINT or SIGTERM and reaps any zombie it inherits. Built static by deploy/images/build-local. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(128 + sig); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_quit = {.sa_handler = quit}, on_child = {.sa_handler = reap};
    if (sigaction(SIGINT, &on_quit, NULL) < 0 || sigaction(SIGTERM, &on_quit, NULL) < 0 ||
        sigaction(SIGCHLD, &on_child, NULL) < 0)
        return 1;
    for (;;)
        pause();
}
