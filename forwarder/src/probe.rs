//! Probes: does the expected database answer at a tunnel's remote? (Being written.)
