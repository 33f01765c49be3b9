//! `--shard i/n`: which replica serves which tunnel. (Being written.)
