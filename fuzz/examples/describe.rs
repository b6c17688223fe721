//! Decodes `module_config` fuzz inputs and times each one on an uninstrumented build:
//! `RUSTC_BOOTSTRAP=1 cargo run --release --example describe -- FILE...` prints the decoded
//! `Input` and the wall time of one run (how a libFuzzer timeout is told from a real hang).
fn main() {
    for p in std::env::args().skip(1) {
        let d = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{p}: {e}");
                continue;
            }
        };
        println!("{p}: {:?}", qconv_fuzz::module_config::describe(&d));
        let t = std::time::Instant::now();
        qconv_fuzz::module_config::run(&d);
        println!("{p}: {:?}", t.elapsed());
    }
}
