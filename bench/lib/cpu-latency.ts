/**
 * Keeps idle CPUs polling instead of halting for as long as the bench runs, the way tuned's
 * latency-performance profile does: a 0 µs request on /dev/cpu_dma_latency, held while the file
 * stays open (Linux PM QoS).
 *
 * Why: on a virtual machine a halted vCPU is woken by an interrupt that exits to the hypervisor.
 * While the server works, the load generator's core waits for each response; the slower the
 * server, the more often it halts, and every response then pays that wake-up inside the
 * server's `writev`. That cost grows with the server's own work, so it stretched every
 * difference between variants (a ratio measured at 0.52 with halting read 0.59 with polling, in
 * paired windows). Polling removes that, for every variant alike.
 */
import { closeSync, openSync, writeSync } from "node:fs";

export interface CpuLatencyHold {
	/** What the report says about it. */
	readonly description: string;
	release(): void;
}

const DEVICE = "/dev/cpu_dma_latency";

export function holdCpuLatency(): CpuLatencyHold {
	let fd: number;
	try {
		fd = openSync(DEVICE, "w");
		writeSync(fd, Buffer.alloc(4)); // a 32-bit 0: no idle state with any exit latency
	} catch (error) {
		const reason = (error as NodeJS.ErrnoException).code ?? String(error);
		return { description: `not held (${DEVICE}: ${reason}): idle cores may halt`, release() {} };
	}
	let open = true;
	return {
		description: `held at 0 µs through ${DEVICE} for the whole run (as tuned's latency-performance profile): idle cores poll instead of halting`,
		release() {
			if (open) closeSync(fd);
			open = false;
		},
	};
}
