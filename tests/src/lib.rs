//! Test support: a throwaway lab of real servers on loopback.
