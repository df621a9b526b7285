/** A clock tests move by hand: no sleeping to wait for expiry. */
export interface TestClock {
	(): number;
	advance(seconds: number): void;
}

export function testClock(start = Date.UTC(2026, 0, 1)): TestClock {
	let now = start;
	const clock = (() => now) as TestClock;
	clock.advance = (seconds: number) => {
		now += seconds * 1000;
	};
	return clock;
}
