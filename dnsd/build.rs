include!("../build/version.rs");
