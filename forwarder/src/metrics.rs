//! The fleet's Prometheus metrics. (Being written.)
