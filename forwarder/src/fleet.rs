//! `forwarder serve`: a fleet of tunnels from one file. (Being written.)
