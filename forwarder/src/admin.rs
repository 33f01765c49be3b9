//! The admin endpoint. (Being written.)
