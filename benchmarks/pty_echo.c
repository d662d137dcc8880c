/*
 * The floor of benchmarks/bench_driver.py: echoes every byte written to a pseudo-terminal back,
 * from its own process, as the simulated card answers from its own.
 *
 * usage: pty_echo   (prints the slave path on its first line; runs until killed)
 */
#define _DEFAULT_SOURCE
#define _XOPEN_SOURCE 600
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

int main(void)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
		return 1;
	const char *name = ptsname(master);
	if (name == NULL)
		return 1;
	/* Held open so the master never reads EIO while the host has the slave closed. */
	int slave = open(name, O_RDWR | O_NOCTTY);
	struct termios t;
	if (slave < 0 || tcgetattr(slave, &t) != 0)
		return 1;
	cfmakeraw(&t);
	if (tcsetattr(slave, TCSANOW, &t) != 0)
		return 1;
	printf("%s\n", name);
	fflush(stdout);
	unsigned char buf[4096];
	for (;;) {
		ssize_t n = read(master, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : 1;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(master, buf + off, (size_t)(n - off));
			if (w < 0 && errno != EINTR)
				return 1;
			if (w > 0)
				off += w;
		}
	}
}
