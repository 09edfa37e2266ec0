//! The executor's unit tests, over `super::testing::Harness` with scripted
//! `FakeRunner`s: `attempt` for what one attempt records, `scheduler` for
//! what starts when (dependencies, limits, order, fairness).

mod attempt;
mod scheduler;
