//! Integration tests of the serving stack, against real servers on loopback.

mod metrics;
