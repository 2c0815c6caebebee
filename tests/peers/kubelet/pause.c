/* The sandbox ("pause") container of the test node's pods: holds the pod's namespaces and
 * reaps nothing else; exits on SIGTERM or SIGINT. Built with `gcc -static` by tests/peers/up.sh,
 * because no image registry (and so no registry.k8s.io/pause) is reachable from the test machines. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  for (;;) pause();
}
