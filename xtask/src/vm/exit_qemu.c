/*
 * Ends the VM through qemu's isa-debug-exit device at I/O port 0xf4: writing the value v
 * makes qemu exit with status (v << 1) | 1. The cloud kernels have no /dev/port, so the
 * port is opened with ioperm(2). Usage: exit-qemu <value>.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
#include <unistd.h>

#define DEBUG_EXIT_PORT 0xf4

int main(int argc, char **argv)
{
	unsigned int value = argc > 1 ? (unsigned int)strtoul(argv[1], NULL, 0) : 0;

	if (ioperm(DEBUG_EXIT_PORT, 4, 1) != 0) {
		perror("exit-qemu: ioperm(0xf4) failed");
		return 1;
	}
	outl(value, DEBUG_EXIT_PORT);
	/*
	 * qemu stops the guest shortly after the write, not at once, so wait before reporting
	 * that the device is missing.
	 */
	sleep(5);
	fprintf(stderr, "exit-qemu: qemu did not exit; is -device isa-debug-exit missing?\n");
	return 1;
}
