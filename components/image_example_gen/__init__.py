"""Custom ExampleGen: folders of real and generated images -> tf.Examples + an ingest report."""

from components.image_example_gen.component import ImageExampleGen
from components.image_example_gen.component import IngestReport
