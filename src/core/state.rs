//! The task state machine: the only place that decides which state changes
//! are legal. Every writer of a task's state asks [`check`] first.
//!
//! ```text
//! PENDING -> QUEUED -> RUNNING -> READY | COMPLETED | FAILED | TIMED_OUT
//!                                | CANCELLED | BUDGET_EXCEEDED | BLOCKED
//! PENDING -> FAILED (a dependency failed or was cancelled)
//! RUNNING -> QUEUED (requeued: rate-limited, or its server went away)
//! READY   -> COMPLETED (accept, its pull request merged) | QUEUED (reject
//!            with feedback) | BLOCKED (a pull request's automatic resumes
//!            ran out: a question for a person)
//! BLOCKED -> QUEUED (answered) | TIMED_OUT (nobody answered in time)
//! FAILED | TIMED_OUT -> QUEUED (retry)
//! any non-final state -> CANCELLED
//! ```
//! COMPLETED, CANCELLED and BUDGET_EXCEEDED are final.

use super::model::TaskState;
use TaskState::*;

/// A state change the state machine refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a task from {} to {}", .from.as_str().to_uppercase(), .to.as_str().to_uppercase())]
pub struct IllegalTransition {
    pub from: TaskState,
    pub to: TaskState,
}

/// Whether a task may move from `from` to `to`.
pub fn check(from: TaskState, to: TaskState) -> Result<(), IllegalTransition> {
    let legal = match (from, to) {
        (Pending, Queued | Failed) => true,
        (Queued, Running) => true,
        (Running, Ready | Completed | Failed | TimedOut | BudgetExceeded | Blocked | Queued) => {
            true
        }
        (Ready, Completed | Queued | Blocked) => true,
        (Blocked, Queued | TimedOut) => true,
        (Failed | TimedOut, Queued) => true,
        (from, Cancelled) => !from.is_final(),
        _ => false,
    };
    if legal {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// The states a task may move to `to` from, in the order of
/// [`TaskState::ALL`].
pub fn sources(to: TaskState) -> Vec<TaskState> {
    TaskState::ALL
        .iter()
        .copied()
        .filter(|&from| check(from, to).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = TaskState> {
        prop::sample::select(TaskState::ALL.to_vec())
    }

    #[test]
    fn the_documented_paths_are_legal() {
        for (from, to) in [
            (Pending, Queued),
            (Queued, Running),
            (Running, Ready),
            (Running, Blocked),
            (Running, Queued),
            (Pending, Failed),
            (Ready, Completed),
            (Ready, Queued),
            (Ready, Blocked),
            (Blocked, Queued),
            (Failed, Queued),
            (TimedOut, Queued),
            (Pending, Cancelled),
            (Blocked, Cancelled),
            (Failed, Cancelled),
        ] {
            assert_eq!(check(from, to), Ok(()), "{from} -> {to}");
        }
    }

    #[test]
    fn a_final_state_has_no_way_out_and_every_other_can_be_cancelled() {
        for &from in TaskState::ALL {
            let exits: Vec<_> = TaskState::ALL
                .iter()
                .filter(|&&to| check(from, to).is_ok())
                .collect();
            assert_eq!(from.is_final(), exits.is_empty(), "{from}: {exits:?}");
            assert_eq!(check(from, Cancelled).is_ok(), !from.is_final(), "{from}");
        }
    }

    #[test]
    fn what_may_run_again_reaches_running_by_the_schedulers_moves_alone() {
        // Promotion of a pending task and the claim: nobody else acts.
        let automatic = [(Pending, Queued), (Queued, Running)];
        for (from, to) in automatic {
            assert_eq!(check(from, to), Ok(()));
        }
        for &from in TaskState::ALL {
            let mut state = from;
            while let Some(&(_, to)) = automatic.iter().find(|(f, _)| *f == state) {
                state = to;
            }
            assert_eq!(from.may_run_again(), state == Running, "{from}");
            assert!(!(from.may_run_again() && from.is_final()), "{from}");
        }
    }

    #[test]
    fn every_end_of_an_attempt_is_done_kept_or_a_failure() {
        let ends: Vec<TaskState> = TaskState::ALL
            .iter()
            .copied()
            .filter(|&to| check(Running, to).is_ok())
            .collect();
        assert_eq!(ends.len(), 8);
        for to in ends {
            let kinds = [to == Completed, to.keeps_sandbox(), to.is_failure()];
            assert_eq!(
                kinds.iter().filter(|&&k| k).count(),
                1,
                "{to} is exactly one of completed, kept, failed: {kinds:?}"
            );
        }
        for &state in TaskState::ALL {
            // Work that goes on can be queued again (or is).
            if state.keeps_sandbox() {
                assert!(state == Queued || check(state, Queued).is_ok(), "{state}");
            }
            // A failure ends the task unless someone retries it.
            if state.is_failure() {
                assert!(!state.may_run_again(), "{state}");
                assert_ne!(state, Completed);
            }
        }
    }

    #[test]
    fn the_error_names_both_states() {
        let err = check(Completed, Cancelled).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot move a task from COMPLETED to CANCELLED"
        );
    }

    proptest! {
        /// Walk random sequences of requested states from PENDING, applying
        /// the legal ones, and check the machine's invariants at each step.
        #[test]
        fn random_walks_keep_the_invariants(wanted in prop::collection::vec(any_state(), 1..60)) {
            let mut state = Pending;
            for to in wanted {
                match check(state, to) {
                    Ok(()) => {
                        prop_assert!(!state.is_final(), "left final state {state}");
                        prop_assert_ne!(state, to, "a self-loop was accepted");
                        if to == Running {
                            prop_assert_eq!(state, Queued);
                        }
                        if state == Pending {
                            prop_assert!(matches!(to, Queued | Failed | Cancelled));
                        }
                        state = to;
                    }
                    Err(e) => {
                        prop_assert_eq!(e.from, state);
                        prop_assert_eq!(e.to, to);
                        let text = e.to_string();
                        let from_name = state.as_str().to_uppercase();
                        let to_name = to.as_str().to_uppercase();
                        prop_assert!(text.contains(&from_name));
                        prop_assert!(text.contains(&to_name));
                    }
                }
            }
        }

        /// Cancel is legal exactly from the non-final states.
        #[test]
        fn cancel_is_legal_from_every_non_final_state(from in any_state()) {
            prop_assert_eq!(check(from, Cancelled).is_ok(), !from.is_final());
        }

        /// Nothing leaves a final state.
        #[test]
        fn final_states_are_final(to in any_state()) {
            for from in [Completed, Cancelled, BudgetExceeded] {
                prop_assert!(check(from, to).is_err());
            }
        }

        /// Every non-final state can still reach a final one.
        #[test]
        fn every_state_can_finish(from in any_state()) {
            let mut seen = vec![from];
            let mut frontier = vec![from];
            while let Some(s) = frontier.pop() {
                for to in TaskState::ALL {
                    if check(s, *to).is_ok() && !seen.contains(to) {
                        seen.push(*to);
                        frontier.push(*to);
                    }
                }
            }
            prop_assert!(seen.iter().any(|s| s.is_final()));
        }
    }
}
