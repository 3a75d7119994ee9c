//! The `inferq` binary: the zoo's default models behind the standard commands.
fn main() -> std::process::ExitCode {
    inferq::run(inferq::model_zoo::default_models)
}
