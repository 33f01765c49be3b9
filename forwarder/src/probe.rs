//! Probes: does the expected database answer at a tunnel's remote? (Being written.)

// Interim stub (the fleet's config needs the kind); the probes replace it.
/// What answers at a tunnel's remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// Only the channel is opened.
    Tcp,
    /// Not probed.
    None,
}

impl std::str::FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "postgres" => Ok(Self::Postgres),
            "mysql" => Ok(Self::Mysql),
            "tcp" => Ok(Self::Tcp),
            "none" => Ok(Self::None),
            _ => Err(format!("{s:?}: expected postgres, mysql, tcp or none")),
        }
    }
}
