#!/bin/busybox sh
# /init of the mountscope test VM: mounts the kernel file systems, loads overlay.ko, runs the
# checks and prints one result line (the marker xtask reads from the serial console), then
# ends qemu through the isa-debug-exit device. A check that fails does not stop the others.

/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp

failed=0

# Runs "$@" as the check named $1 and prints whether it passed.
check() {
	name=$1
	shift
	echo "MOUNTSCOPE-VM-CHECK: $name (uptime $(cut -d ' ' -f 1 /proc/uptime) s)"
	if "$@"; then
		echo "MOUNTSCOPE-VM-CHECK-PASSED: $name"
	else
		echo "MOUNTSCOPE-VM-CHECK-FAILED: $name (exit status $?)"
		failed=1
	fi
}

# The tier in `mountscope doctor --json`, whitespace removed so one grep finds it.
doctor_tier_is() {
	mountscope doctor --json > /tmp/doctor.json
	status=$?
	tr -d ' \n' < /tmp/doctor.json | grep -q "\"tier\":{\"kind\":\"$1\""
	found=$?
	if [ $found -ne 0 ]; then
		cat /tmp/doctor.json
	fi
	[ $status -eq 0 ] && [ $found -eq 0 ]
}

# The syscall probes in `mountscope doctor --json`.
doctor_syscall_probes_are() {
	mountscope doctor --json > /tmp/doctor.json || return 1
	tr -d ' \n' < /tmp/doctor.json | grep -q "\"syscall_probes\":\"$1\"" || {
		cat /tmp/doctor.json
		return 1
	}
}

# `mountscope record` with the given hold method writes snapshots of the given tier.
record_tier_is() {
	mountscope record --duration 3 --exec --builders 2 --layers 4 --hold-method "$1" \
		--store /tmp/mountscope-store -o "/tmp/record-$1.jsonl" || return 1
	grep -q "\"tier\":{\"kind\":\"$2\"" "/tmp/record-$1.jsonl" || {
		head -c 2000 "/tmp/record-$1.jsonl"
		return 1
	}
}

echo "MOUNTSCOPE-VM-KERNEL: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPUs"
check overlay-module insmod /lib/overlay.ko
check doctor-exact-fentry doctor_tier_is exact_fentry
check doctor-syscall-fentry doctor_syscall_probes_are fentry
check exact-tier-tests env MOUNTSCOPE_EXPECT_EXACT=1 /bin/exact_tier --test-threads=1
check record-fentry record_tier_is fentry exact_fentry

# Measurements, only when xtask passes mountscope.bench=1 on the kernel command line.
if grep -q 'mountscope.bench=1' /proc/cmdline; then
	check fentry-cost env MOUNTSCOPE_EXPECT_EXACT=1 /bin/exact_tier --ignored --exact \
		fentry_cost_on_mmap_loop --nocapture
	check bench-20-layers mountscope bench --layers 20 --builders 4 --duration 5 \
		--store /tmp/mountscope-store
	check bench-50-layers mountscope bench --layers 50 --builders 4 --duration 5 \
		--store /tmp/mountscope-store
	check overhead mountscope overhead --no-bpftrace --rounds 3 --iterations 1000
fi

if [ $failed -eq 0 ]; then
	echo "MOUNTSCOPE-VM-RESULT: PASS"
	exit-qemu 0
else
	echo "MOUNTSCOPE-VM-RESULT: FAIL"
	exit-qemu 1
fi
# Reached only if the exit helper failed: the kernel panics when init exits, and qemu
# (started with -no-reboot and panic=-1) stops.
exit 1
