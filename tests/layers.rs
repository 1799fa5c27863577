//! The layer rule of `src/lib.rs`: a module names (`crate::…`) only modules of lower layers. The layers
//! are read from the diagram in lib.rs itself, so the picture and the code cannot drift apart.

use std::collections::HashMap;
use std::path::Path;

/// Module name → layer, from the `//! L<n> a/ b.rs …` lines of lib.rs's diagram.
fn layers(lib: &str) -> HashMap<String, u32> {
    let mut map = HashMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! L")) {
        let mut words = line.split_whitespace();
        let Some(layer) = words.next().and_then(|n| n.parse::<u32>().ok()) else { continue };
        for w in words.take_while(|w| w.ends_with('/') || w.ends_with(".rs")) {
            map.insert(w.trim_end_matches('/').trim_end_matches(".rs").to_string(), layer);
        }
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if e.is_dir() {
            rust_files(&e, out);
        } else if e.extension().is_some_and(|x| x == "rs") {
            out.push(e);
        }
    }
}

#[test]
fn no_module_names_a_module_of_its_own_or_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    for m in ["protocol", "config", "pool", "server", "cancel", "shared", "client", "admin", "listener", "supervisor"] {
        assert!(layers.contains_key(m), "{m} missing from lib.rs's diagram: {layers:?}");
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let Some(&own) = layers.get(&top) else { continue }; // lib.rs, bin/
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            match layers.get(&name) {
                Some(&l) if name != top && l >= own => broken.push(format!("{rel} (L{own}) names {name} (L{l})")),
                _ => {}
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "imports against the layer rule:\n{}", broken.join("\n"));
}
