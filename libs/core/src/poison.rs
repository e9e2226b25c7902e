//! Why a stage sets a record aside: the bounded set of dead-letter classes. Its own module, importing
//! nothing, because both the stage loop and the metrics (which pre-register every class at zero, so
//! that the dead-letter alert's `increase()` sees a class's first record) need it.

/// The class of a dead-lettered record: a metric label and the `error_class` of its `DeadLetter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonClass {
    /// Not the Avro the topic's schema says (a foreign producer, a bad schema rollout).
    Decode,
    /// A vendor adapter cannot read the webhook.
    Adapter,
    /// A record that cannot be written as Avro.
    Encode,
    /// Kafka refused an output record for good (too large).
    Produce,
    /// PostgreSQL refused a row (a constraint), or a limit of ours did (a call's most events).
    Rejected,
}

impl PoisonClass {
    pub const ALL: [PoisonClass; 5] = [
        PoisonClass::Decode,
        PoisonClass::Adapter,
        PoisonClass::Encode,
        PoisonClass::Produce,
        PoisonClass::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PoisonClass::Decode => "decode",
            PoisonClass::Adapter => "adapter",
            PoisonClass::Encode => "encode",
            PoisonClass::Produce => "produce",
            PoisonClass::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for PoisonClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
