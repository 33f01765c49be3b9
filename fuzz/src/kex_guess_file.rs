//! The KexGuessFile: `forwarder::kex_memory::FirstsFile::parse` on arbitrary text (the file
//! is read as UTF-8; anything else is set aside before the parser, as `prepare` does).
//!
//! Beside no panic: no more skipped lines than there are lines, no more entries than
//! `CAPACITY`; what parsed renders to text that parses back to the same file with nothing
//! skipped; and a host set after parsing is found again, under its own port only.

use forwarder::kex_memory::{CAPACITY, FirstsFile};

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, skipped) = FirstsFile::parse(text);
    let lines = text.lines().count();
    assert!(skipped <= lines, "{skipped} skipped of {lines} lines");
    let Some(mut file) = file else { return };
    assert!(file.len() <= CAPACITY, "{} entries", file.len());
    assert!(file.len() + skipped <= lines, "more entries than lines");

    let text = file.render();
    assert_eq!(
        FirstsFile::parse(&text),
        (Some(file.clone()), 0),
        "the rendered file reads back differently:\n{text}"
    );

    let firsts = ("curve25519-sha256".to_owned(), "ssh-ed25519".to_owned());
    file.set("fuzz.example", 2222, firsts.clone());
    assert_eq!(file.get("fuzz.example", 2222), Some(&firsts));
    assert!(file.len() <= CAPACITY);
    let again = FirstsFile::parse(&file.render()).0.expect("our own file");
    assert_eq!(again.get("fuzz.example", 2222), Some(&firsts));
}

/// Seed inputs: a file as forwarder writes it, and one with lines that are not ours.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut file = FirstsFile::with_salt([0x5a; 16]);
    file.set(
        "bastion.example",
        22,
        (
            "sntrup761x25519-sha512@openssh.com".to_owned(),
            "rsa-sha2-512".to_owned(),
        ),
    );
    file.set(
        "10.0.0.7",
        2222,
        ("curve25519-sha256".to_owned(), "ssh-ed25519".to_owned()),
    );
    let written = file.render();
    let messy = format!(
        "{written}salt 00\n# comment\n\nabc k h\n{} k\n",
        "f".repeat(64)
    );
    let longest = format!(
        "salt {}\n{} {} {}\n",
        "0123456789abcdef".repeat(2),
        "9".repeat(64),
        "k".repeat(64),
        "h".repeat(65)
    );
    vec![
        ("written".to_owned(), written.into_bytes()),
        ("messy".to_owned(), messy.into_bytes()),
        ("longest_names".to_owned(), longest.into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs() {
        let seeds: Vec<_> = crate::seeds::all()
            .into_iter()
            .filter(|s| s.target == "kex_guess_file")
            .collect();
        assert_eq!(seeds.len(), 3);
        for s in seeds {
            run(&s.data);
        }
    }

    #[test]
    fn the_written_seed_is_usable() {
        let (file, skipped) = FirstsFile::parse(std::str::from_utf8(&seeds()[0].1).expect("text"));
        assert_eq!((file.map(|f| f.len()), skipped), (Some(2), 0));
    }
}
