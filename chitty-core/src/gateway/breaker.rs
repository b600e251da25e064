//! A per-route circuit breaker, decided from a `now` the caller passes.

use std::time::Duration;

use crate::events::CircuitState;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen { probe_started: Timestamp },
}

/// Opens after `threshold` consecutive failures, stays open for `open_for`, then lets one probe through.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: State,
}

/// What the breaker says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as the single probe of a half-open circuit.
    Probe,
    /// Skip this route until the given time.
    Rejected {
        /// When the circuit lets a probe through.
        until: Timestamp,
    },
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> CircuitBreaker {
        CircuitBreaker { threshold: threshold.max(1), open_for, state: State::Closed { failures: 0 } }
    }

    /// Whether an attempt may go to this route now.
    pub fn admit(&mut self, now: Timestamp) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < until => Admission::Rejected { until },
            State::Open { .. } => {
                self.state = State::HalfOpen { probe_started: now };
                Admission::Probe
            }
            // A probe that never reported back (its caller vanished) must not wedge the circuit.
            State::HalfOpen { probe_started } if now >= probe_started.plus(self.open_for) => {
                self.state = State::HalfOpen { probe_started: now };
                Admission::Probe
            }
            State::HalfOpen { probe_started } => Admission::Rejected { until: probe_started.plus(self.open_for) },
        }
    }

    /// Whether the circuit is closed (the route takes traffic without waiting for a probe).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// The circuit's state as reported in events and metrics. An open circuit whose wait is over stays `Open`
    /// until [`CircuitBreaker::admit`] lets the probe through.
    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
        }
    }

    /// Records a success: the circuit closes.
    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// Records a failure; returns `true` when this failure opened the circuit.
    pub fn on_failure(&mut self, now: Timestamp) -> bool {
        match self.state {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                self.state = State::Open { until: now.plus(self.open_for) };
                true
            }
            State::Closed { failures } => {
                self.state = State::Closed { failures: failures + 1 };
                false
            }
            State::HalfOpen { .. } | State::Open { .. } => {
                self.state = State::Open { until: now.plus(self.open_for) };
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let mut b = CircuitBreaker::new(3, Duration::from_secs(30));
        let t = Timestamp(0);
        assert!(!b.on_failure(t));
        assert!(!b.on_failure(t));
        assert_eq!(b.admit(t), Admission::Allowed);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.on_failure(t));
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(t.plus(Duration::from_secs(29))), Admission::Rejected { until: Timestamp(30_000) });
        assert_eq!(b.state(), CircuitState::Open, "still waiting");
        assert_eq!(b.admit(t.plus(Duration::from_secs(30))), Admission::Probe);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(matches!(b.admit(t.plus(Duration::from_secs(31))), Admission::Rejected { .. }), "one probe at a time");
        assert!(b.on_failure(t.plus(Duration::from_secs(31))), "a failed probe re-opens");
        assert_eq!(b.admit(t.plus(Duration::from_secs(61))), Admission::Probe);
        b.on_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(t.plus(Duration::from_secs(61))), Admission::Allowed);
        // A success resets the count of consecutive failures.
        assert!(!b.on_failure(t) && !b.on_failure(t));
        b.on_success();
        assert!(!b.on_failure(t));
    }
}
