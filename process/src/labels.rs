//! Metric label values as enums: a label can only take the values its enum lists, and every
//! binary spells them the same way.

/// Declares a fieldless enum whose variants are metric label values: `as_str()` gives the
/// value, and `prometheus_client`'s `EncodeLabelValue` is implemented with it (the calling
/// crate depends on `prometheus-client`).
///
/// ```
/// phantom_process::label_enum! {
///     /// How a round ended.
///     pub enum RoundResult {
///         Ok => "ok",
///         Failed => "error",
///     }
/// }
/// assert_eq!(RoundResult::Failed.as_str(), "error");
/// ```
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// The metric label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $label ),+
                }
            }
        }

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> ::std::fmt::Result {
                ::std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
